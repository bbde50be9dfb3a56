"""Pareto charts: the front is the non-dominated set, labels are escaped."""

from sparsebench.sitegen.svg import Point, chart, pareto_front


def test_front_keeps_only_non_dominated_points():
    pts = [Point(1.0, 5.0, "a"), Point(2.0, 10.0, "b"), Point(1.5, 20.0, "c"), Point(0.5, 1.0, "d")]
    assert [p.label for p in pareto_front(pts, x_higher_better=True)] == ["d", "a", "b"]
    assert [p.label for p in pareto_front(pts, x_higher_better=False)] == ["d"]


def test_chart_has_a_mark_per_point_and_escapes_labels():
    svg = chart([Point(1.0, 2.0, "<script>x</script>", "../runs/a.html"), Point(2.0, 3.0, "b")],
                "speed-up", "loss (%)", "t")
    assert svg.startswith("<svg") and svg.count("<circle") == 2 and "sb-front" in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_empty_chart_says_why():
    assert "No points" in chart([], "x", "y", "t")


def test_outliers_switch_the_loss_axis_to_log_scale():
    svg = chart([Point(1.0, 5.0, "a"), Point(2.0, 70000.0, "b")], "x", "loss (%)", "t")
    assert "(log scale)" in svg and ">10000<" in svg
    assert "(log scale)" not in chart([Point(1.0, 5.0, "a"), Point(2.0, 50.0, "b")], "x", "y", "t")
