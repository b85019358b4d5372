"""The pieces that make HTML reports open offline (the browser checks are in
tests/integration/test_offline_reports.py)."""

from tabreg import offline
from tabreg.data import docs
from tabreg.evaluation import plots_page


def test_external_assets_are_what_a_page_would_fetch():
    page = """<link rel="stylesheet" href="https://cdn.example/x.css">
    <script src="//cdn.example/y.js"></script><img src='http://s3.example/logo.png'>
    <style>.a { background: url('https://s3.example/dark.png') }</style>
    <a href="https://greatexpectations.io/">a link a reader may follow</a>
    <img src="data:image/png;base64,AAAA"><script src="local.js"></script>"""
    assert offline.external_assets(page) == [
        "https://cdn.example/x.css", "//cdn.example/y.js", "http://s3.example/logo.png",
        "https://s3.example/dark.png"]


def test_inline_script_cannot_end_its_tag_early():
    assert offline.script("var s = '</script><b>';") == \
        "<script>\nvar s = '<\\/script><b>';\n</script>"


def test_pair_samples_read_as_named_pairs():
    result = {"partial_unexpected_list": [[4123.0, 4126.0], [1.5, 2.0]],
              "partial_unexpected_counts": [{"value": [4123.0, 4126.0], "count": 1}],
              "unexpected_count": 2}
    kwargs = {"column_A": "total_rooms", "column_B": "total_bedrooms", "or_equal": True}
    readable = docs.readable_values(result, kwargs)
    assert readable["partial_unexpected_list"] == [
        "total_rooms=4123, total_bedrooms=4126", "total_rooms=1.5, total_bedrooms=2"]
    assert readable["partial_unexpected_counts"] == [
        {"value": "total_rooms=4123, total_bedrooms=4126", "count": 1}]
    assert result["partial_unexpected_list"][0] == [4123.0, 4126.0]  # the input is kept
    single = {"partial_unexpected_list": [99.0, "MARS"]}
    assert docs.readable_values(single, {"column": "x"}) == single


def test_run_id_names_the_run_for_data_docs():
    run = docs.run_id("data version 1234abcd")
    assert run["run_name"] == "data version 1234abcd" and run["run_time"].endswith("+00:00")


def test_a_plot_without_points_says_why_instead_of_an_empty_panel(monkeypatch):
    monkeypatch.setattr(offline, "vega_bundle", lambda: "/* vega */")
    spec = {"mark": "point", "data": {"values": [{"a": 1}]}}
    html = plots_page.page(
        {"reports/learning_curve.json": [], "reports/predictions.csv":
         [{"type": "vega", "content": spec}], "reports/other.json": []},
        {"reports/learning_curve.json": "No learning curve: the model is a forest."})
    assert '<p class="note">No learning curve: the model is a forest.</p>' in html
    assert '<p class="note">reports/other.json holds no data points.</p>' in html
    assert html.count('<div class="vega"') == 1 and '"mark": "point"' in html
    assert offline.external_assets(html) == []
