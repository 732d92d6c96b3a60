"""End to end in a real browser (issue #5): pick resnet20 on the Train page, launch a tiny run on
digits and see its accuracy figure, live and on the Collapse & weights page; upload its
checkpoint on Inspect and get the real-network report."""

from __future__ import annotations

from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import _no_exception, _settle


def _fill(page, label: str, value: str) -> None:
    """Type ``value`` into the number/text input labelled ``label`` and commit it (Enter)."""
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    _settle(page)


def test_launch_resnet20_on_digits_shows_accuracy(browser, server) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server['url']}/train")
    _settle(page)
    page.get_by_test_id("stSelectbox").nth(1).click()  # the model (the preset is first)
    page.get_by_role("option", name="resnet20", exact=True).click()
    _settle(page)
    page.get_by_role("heading", name="Train a real network").wait_for(timeout=30_000)
    page.get_by_text("Data and real-network training").wait_for(timeout=30_000)
    # the resnet20 defaults were applied on the switch
    assert page.get_by_label("K classes", exact=True).input_value() == "10"
    assert page.get_by_label("width (d or d1,…,dL)", exact=True).input_value() == "64"
    _fill(page, "n per class (training samples)", "3")
    _fill(page, "steps", "4")
    _no_exception(page, "train (resnet20)")
    page.get_by_text("λ_H,UFM = λ_H/N", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "train_resnet20_form.png"), full_page=True)

    before = {p.name for p in server["runs"].iterdir()}
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("state: finished").wait_for(timeout=180_000)
    page.get_by_text("Accuracy (eval mode)").first.wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page, "train (resnet20, after launch)")
    (new,) = {p.name for p in server["runs"].iterdir()} - before
    assert page.get_by_text("batch loss (train mode)").count() >= 1
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 3
    page.screenshot(path=str(SHOTS / "train_resnet20_after_launch.png"), full_page=True)

    page.goto(f"{server['url']}/collapse?run={new}&layer=2")
    _settle(page)
    page.get_by_role("heading", name="Accuracy and loss").wait_for(timeout=60_000)
    page.get_by_text("Accuracy (eval mode)").first.wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page, "collapse (resnet20)")
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 8
    page.screenshot(path=str(SHOTS / "collapse_resnet20.png"), full_page=True)

    # the run's checkpoint uploaded on Inspect gets the real-network report (its head layers)
    ckpt = sorted((server["runs"] / new / "checkpoints").glob("step_*.pt"))[-1]
    page.goto(f"{server['url']}/inspect")
    _settle(page)
    page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(ckpt))
    page.get_by_text("resnet20 (ResNet-20 + head, layers = its head)", exact=False).wait_for(
        timeout=120_000
    )
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=60_000)
    _settle(page)
    _no_exception(page, "inspect (resnet20 upload)")
    page.screenshot(path=str(SHOTS / "inspect_resnet20_upload.png"), full_page=True)
    page.close()
