"""The MLflow UI as a researcher sees it, in a real browser: Debian's Chromium driven by selenium
against `smoothsweep ui` on a finished smoke sweep's store. Screenshots go to the test's temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.helpers import CLI, child_runs, free_port, parent_runs

pytestmark = pytest.mark.integration

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and not os.environ.get("CI"):  # CI installs them (.ci/run)
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def ui(smoke, tmp_path_factory):
    """`smoothsweep ui` on the smoke sweep's store: the link it printed, and its server."""
    ws, proc = smoke
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    server = subprocess.Popen(
        [*CLI, "ui", "smk", "--tracking-uri", ws.tracking_uri, "--port", str(port)],
        cwd=ws.path, env=ws.env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        link = server.stdout.readline().strip()
        _wait_healthy(f"http://127.0.0.1:{port}/health", server, log)
        yield link, port, ws
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"`smoothsweep ui` exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the MLflow UI did not come up: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=2400,1100", "--lang=en-US"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(driver, predicate, what: str, timeout: float = 60):
    """Poll until `predicate` returns something truthy; the grid re-renders as it loads, so an
    element gone stale meanwhile is just "not yet"."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(check)
    except TimeoutException:
        shot = Path(os.environ.get("PYTEST_SHOT_DIR", "/tmp")) / "ui-timeout.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"the UI never showed {what} (screenshot: {shot})") from None


def _text(driver) -> str:
    return driver.find_element("tag name", "body").text


NAME = "attributes.`Run Name`"  # the grid's column ids: MLflow's sort keys


def test_the_printed_link_lands_on_the_runs_table_with_our_columns(ui, browser, tmp_path):
    link, port, ws = ui
    assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/") and "/runs?" in link
    browser.get(link)
    wanted = {"params.`sigma_inv`", "params.`lr`", "params.`width`", "metrics.`test_mse`",
              "metrics.`x_opt/width_16`", "metrics.`x_opt/width_64`"}  # fmt: skip
    _wait_for(browser, lambda d: wanted <= _column_ids(d), f"the runs table with {wanted}")
    browser.save_screenshot(str(tmp_path / "runs-table.png"))
    page = _text(browser)
    assert "Runs" in page and "Traces" not in _column_ids(browser)
    assert "test MSE vs sigma_inv" in page  # the spec's description is the experiment's
    # The parent row, collapsed as MLflow draws it, carries the optimum; open it as a user would.
    parent = parent_runs(ws.tracking_uri, "smk")[0]
    pid = parent.info.run_id
    assert _cell(browser, pid, NAME) == "smk"
    shown = float(_cell(browser, pid, "metrics.`x_opt/width_16`"))
    assert shown == pytest.approx(parent.data.metrics["x_opt/width_16"], rel=1e-4)
    browser.find_element("css selector", f'[row-id="{pid}"] [col-id="{NAME}"] button').click()
    children = {r.info.run_id: r for r in child_runs(ws.tracking_uri, "smk")}
    _wait_for(browser, lambda d: set(children) <= _row_ids(d), "the six child rows")
    browser.save_screenshot(str(tmp_path / "runs-expanded.png"))
    names = sorted(_cell(browser, rid, NAME) for rid in children)
    assert [n.split()[0] for n in names] == ["width=16"] * 3 + ["width=64"] * 3
    assert all("σ⁻¹=" in n and " lr=" in n and " #" in n for n in names)
    for rid, run in children.items():  # each child row shows its own numbers in our columns
        assert float(_cell(browser, rid, "params.`sigma_inv`")) == pytest.approx(
            float(run.data.params["sigma_inv"]), rel=1e-6
        )
        assert _cell(browser, rid, "params.`width`") == run.data.params["width"]
        assert float(_cell(browser, rid, "metrics.`test_mse`")) == pytest.approx(
            run.data.metrics["test_mse"], rel=1e-4
        )


def test_the_parent_run_page_shows_the_optimum(ui, browser, tmp_path):
    link, port, ws = ui
    parent = parent_runs(ws.tracking_uri, "smk")[0]
    x_opt = parent.data.metrics["x_opt/width_16"]
    browser.get(link)  # from the runs table, a click on the sweep's row, as a user would
    pid = parent.info.run_id
    name = f'[row-id="{pid}"] [col-id="{NAME}"] a'
    _wait_for(browser, lambda d: d.find_elements("css selector", name), "the sweep's row")
    browser.find_element("css selector", name).click()
    _wait_for(browser, lambda d: "x_opt/width_16" in _text(d), "x_opt on the parent run's page")
    browser.save_screenshot(str(tmp_path / "parent-run.png"))
    page = _text(browser)
    assert f"{x_opt:.4g}"[:4] in page  # the value itself, as the page rounds it
    for param in ("axis.width", "search.sigma_inv", "experiment"):
        assert param in page
    # MLflow's link from the table drops `workflowType`, so this page may wear GenAI's sidebar
    # (`smoothsweep ui` says how to switch it for good); the run's own content is the same.


def _column_ids(driver) -> set[str]:
    found = driver.find_elements("css selector", "[role=columnheader][col-id]")
    return {e.get_attribute("col-id") for e in found}


def _row_ids(driver) -> set[str]:
    return {e.get_attribute("row-id") for e in driver.find_elements("css selector", "[row-id]")}


def _cell(driver, row_id: str, column: str) -> str:
    text = driver.find_element(
        "css selector", f'[row-id="{row_id}"] [role=gridcell][col-id="{column}"]'
    ).text
    return text.strip().split("\n")[-1]  # a run name's cell starts with its colour's hex code
