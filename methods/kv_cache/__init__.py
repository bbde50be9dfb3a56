"""KV-cache compression: hold fewer (StreamingLLM, H2O, SnapKV), lower-bit (KIVI) or sparser
(Mustafar) keys and values, through one transformers ``Cache`` and one attention function."""
