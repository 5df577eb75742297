"""`superres serve` in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium) opens the page served by uvicorn, uploads a real photo, waits for the job, drags the comparison
slider and zooms, and checks the before/after images' sizes. Skips where the browser is not installed.

``SUPERRES_SCREENSHOT=docs/serve.png python -m pytest tests/test_serve_browser.py`` also saves the page's
screenshot there (the README's picture)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from superres.io import write_image  # noqa: E402
from superres.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and its driver (apt-get install chromium chromium-driver)")


@pytest.fixture
def server():
    """The real server (uvicorn) on a free port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ServeConfig()), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,760", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def rect(driver, element_id: str) -> dict:
    return driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return {x: r.x, y: r.y, w: r.width, h: r.height};", element_id)


def test_page_upscales_a_photo_and_compares(server, browser, photos, tmp_path):
    photo = tmp_path / "cat.png"
    write_image(photo, np.rint(photos["chelsea"][60:156, 150:278] * 255).astype(np.uint8))  # 128x96, real
    browser.get(server)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    Select(browser.find_element(By.ID, "model")).select_by_value("realesr-animevideov3")
    picker = browser.find_element(By.ID, "files")
    browser.execute_script("arguments[0].style.display = 'block'", picker)
    picker.send_keys(str(photo))
    browser.execute_script("arguments[0].style.display = ''", picker)
    wait.until(lambda d: d.find_element(By.ID, "compare").get_attribute("data-ready"))

    sizes = browser.execute_script(
        "const b = document.getElementById('before'), a = document.getElementById('after');"
        "return [b.naturalWidth, b.naturalHeight, a.naturalWidth, a.naturalHeight];")
    assert sizes == [128, 96, 512, 384]
    before, after = rect(browser, "before"), rect(browser, "after")
    assert before == after  # one box: the 4x result over the input, pixel for pixel
    viewport = rect(browser, "viewport")
    assert abs(after["w"] / after["h"] - 512 / 384) < 0.01 and after["w"] <= viewport["w"] + 0.5
    assert "done" in browser.find_element(By.CSS_SELECTOR, ".job .status").text
    assert browser.find_element(By.CSS_SELECTOR, ".job .download").get_attribute("href").endswith("/result")
    assert browser.find_element(By.ID, "errors").text == ""

    divider = browser.find_element(By.ID, "divider")
    start = rect(browser, "divider")["x"]
    ActionChains(browser).click_and_hold(divider).move_by_offset(-120, 0).move_by_offset(-40, 0).release().perform()
    moved = rect(browser, "divider")["x"]
    assert abs((start - moved) - 160) < 3
    clip = browser.execute_script("return document.getElementById('after-clip').style.clipPath")
    clip_x = float(clip.split()[-1].rstrip("px)"))
    assert clip.startswith("inset(0px 0px 0px ") and abs(clip_x - (moved - viewport["x"] + 1)) < 3
    assert rect(browser, "before") == before  # dragging the slider neither zooms nor pans

    browser.find_element(By.ID, "zoom-in").click()
    zoomed_before, zoomed_after = rect(browser, "before"), rect(browser, "after")
    assert zoomed_before == zoomed_after and abs(zoomed_after["w"] - 2 * after["w"]) < 0.5
    ActionChains(browser).move_to_element_with_offset(browser.find_element(By.ID, "viewport"), 200, 100) \
        .click_and_hold().move_by_offset(30, 20).release().perform()
    panned = rect(browser, "after")
    assert abs(panned["x"] - zoomed_after["x"] - 30) < 1 and rect(browser, "before") == panned
    rendering = browser.execute_script("return getComputedStyle(document.getElementById('before')).imageRendering")
    assert rendering == "pixelated"

    browser.find_element(By.ID, "zoom-fit").click()
    _screenshot(browser, tmp_path / "serve.png")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    browser.execute_script("arguments[0].style.display = 'block'", picker)
    picker.send_keys(str(bad))
    wait.until(lambda d: d.find_element(By.ID, "errors").text)
    errors = browser.find_element(By.ID, "errors").text
    assert errors == "notes.png: not an image file, or a format superres cannot read"


def _screenshot(browser, path: Path) -> None:
    browser.save_screenshot(str(path))
    target = os.environ.get("SUPERRES_SCREENSHOT")
    if target:
        from PIL import Image

        with Image.open(path) as im:  # a small PNG for the README: 128 colours are plenty for a UI
            im.convert("RGB").quantize(128).save(target, optimize=True)
