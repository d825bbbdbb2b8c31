"""The page at ``/`` driven in a real headless browser: Debian's chromium and chromium-driver, through selenium.

A person's path: type part of a title, pick the suggestion (by click, then by keyboard), ask for
recommendations, move the novelty slider and see the list change, ask "why", ask for new items only,
switch on open mode,
then the same page at a phone's width. Screenshots go to tests/artifacts/serve/ (git-ignored; set
M6GEN_TEST_ARTIFACTS to put them elsewhere). Skipped only where no browser is installed: .ci/run
installs one with apt-get where apt works.
"""

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import live_server, load_world, write_serve_data

from m6gen.serving.app import create_app
from m6gen.serving.settings import ServeArgs

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("M6GEN_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "serve"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
WAIT = 30  # seconds; a busy 2-core machine runs the tiny model slowly


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "no browser could be installed here: chromium and chromium-driver are missing "
            "(apt-get install -y chromium chromium-driver; .ci/run does this where apt works)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1000,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)  # never downloads a driver
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    world = load_world(write_serve_data(tmp_path_factory.mktemp("page") / "data"), beams=8)
    with live_server(create_app(*world, ServeArgs(max_wait_ms=1))) as base:
        yield base


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def test_pick_titles_recommend_rerank_explain_and_open_mode(browser, page_url):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # the list re-renders while a wait polls it: an element found a moment ago may be gone
    wait = WebDriverWait(browser, WAIT, ignored_exceptions=(StaleElementReferenceException,))

    def results() -> list[str]:  # read in one script call, so never half from an old list
        return browser.execute_script(
            "return [...document.querySelectorAll('#results .title')].map(e => e.innerText.trim())"
        )

    browser.get(page_url)
    wait.until(ec.text_to_be_present_in_element((By.ID, "info"), "12 items"))
    box = browser.find_element(By.ID, "title-input")
    box.send_keys("ali")  # a partial title: the suggestions come from /items
    wait.until(lambda d: "Aliens (1986)" in [e.text for e in d.find_elements(By.CSS_SELECTOR, "#suggestions li")])
    next(e for e in browser.find_elements(By.CSS_SELECTOR, "#suggestions li") if e.text == "Aliens (1986)").click()
    box.send_keys("godfather")
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#suggestions li"), "The Godfather (1972)"))
    box.send_keys(Keys.ENTER)  # the first suggestion, by keyboard
    chips = [e.get_attribute("data-item-id") for e in browser.find_elements(By.CSS_SELECTOR, "#history li")]
    assert chips == ["104", "106"]

    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("5")
    browser.find_element(By.ID, "recommend").click()
    wait.until(lambda d: len(results()) == 5)
    before = results()
    assert not {"Aliens (1986)", "The Godfather (1972)"} & set(before)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .bar.novelty")) == 5
    shot(browser, "1-recommendations")

    browser.find_element(By.ID, "novelty").send_keys(Keys.END)  # the slider to 1.0: the list is reranked
    wait.until(lambda d: results() != before and len(results()) == 5)
    assert browser.find_element(By.ID, "novelty-value").text == "1.00"
    shot(browser, "2-novelty-1")

    browser.find_element(By.CSS_SELECTOR, "#results li .why").click()
    wait.until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, ".explanation")
            and d.find_element(By.CSS_SELECTOR, ".explanation").text not in ("", "asking the model…")
        )
    )
    assert "error" not in browser.find_element(By.CSS_SELECTOR, ".explanation").get_attribute("class")

    browser.find_element(By.ID, "cold").click()  # new items only: the two items no training interaction names
    wait.until(lambda d: sorted(results()) == ["Alien 3 (1992)", "Crouching Tiger, Hidden Dragon (2000)"])
    shot(browser, "3-new-items-only")

    browser.find_element(By.ID, "open").click()  # open mode (new items only goes off): titles the catalog lacks
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .flag"))
    assert browser.find_element(By.CSS_SELECTOR, "#results .flag").text == "not in catalog"
    assert not browser.find_element(By.ID, "cold").is_selected()
    shot(browser, "4-open-mode")

    browser.set_window_size(390, 844)  # a phone
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
    shot(browser, "5-phone")


def test_the_api_docs_render_without_a_network(browser, page_url):
    """/docs is Swagger UI served by the app itself: with FastAPI's default page, which loads its script
    from a CDN, an offline machine shows a blank page and no operation appears."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1000, 1000)
    browser.get(page_url + "/docs")
    operations = (By.CSS_SELECTOR, ".opblock-summary-path")
    WebDriverWait(browser, WAIT).until(lambda d: len(d.find_elements(*operations)) >= 4)
    paths = {e.get_attribute("data-path") or e.text for e in browser.find_elements(*operations)}
    assert {"/recommend", "/items", "/explain", "/info"} <= paths, paths
    shot(browser, "5-api-docs")


def test_a_server_default_above_the_sliders_range_is_shown_and_sent(browser, tmp_path):
    """serve --diversity 3: the page once clamped it to its slider's 1 and sent 1."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    world = load_world(write_serve_data(tmp_path / "data"), beams=8)
    options = {"k": 5, "diversity": 3.0, "novelty": 0.0}
    with live_server(create_app(*world, ServeArgs(max_wait_ms=1), options=options)) as base:
        browser.get(base)
        wait = WebDriverWait(browser, WAIT)
        wait.until(lambda d: d.find_element(By.ID, "diversity-value").text == "3.00")
        assert float(browser.find_element(By.ID, "diversity").get_attribute("value")) == 3.0
