"""A real `conceal serve` on loopback: the README's curl lines as written, and the page in a real headless Chromium
(choose a photo, set attributes, conceal, see the result, download it).

The browser tests need Debian's chromium and chromium-driver (.ci/run installs them) and selenium, and skip with
one line without them. Set CONCEAL_SCREENSHOT_DIR to keep the screenshot (page.png: the page with a result).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="conceal serve needs the serve extra: pip install 'conceal[serve]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

REPO = Path(__file__).resolve().parents[1]
MODELS = [REPO / "models" / "concealer-utkface-64", REPO / "models" / "masker-lfw-gender"]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """`conceal serve` on a free loopback port, with two shipped models; stopped after the module."""
    if not all((m / "model.json").is_file() for m in MODELS):
        pytest.skip("the shipped models are not in this checkout")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen([sys.executable, "-m", "conceal.cli", "serve", *map(str, MODELS), "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"conceal serve exited: {process.stdout.read()}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "conceal serve did not start within 120 s"
        time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if webdriver is None:
        pytest.skip("the browser tests need selenium (the dev extra)")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium + chromedriver here (apt-get install chromium chromium-driver)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """scikit-image's bundled astronaut photo (public domain), 320x320, with EXIF to be dropped."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    image = Image.fromarray(data.astronaut()).resize((320, 320), Image.Resampling.LANCZOS)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    image.save(path, quality=92, exif=exif)
    return path


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CONCEAL_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_the_readmes_curl_lines_run_as_written(server, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("no curl here")
    readme = (REPO / "README.md").read_text()
    (block,) = [b for b in readme.split("```bash\n") if b.startswith("curl -s http://127.0.0.1:8000/health")]
    script = block.split("```")[0].replace("http://127.0.0.1:8000", server)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `python` is this interpreter
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '{"status":"ok"' in done.stdout and '"name":"concealer-utkface-64"' in done.stdout
    assert "x-faces-found: 1" in done.stdout.lower()  # the astronaut's one face
    out = Image.open(tmp_path / "concealed.png")
    assert out.format == "PNG" and out.size == (512, 512)


def test_page_conceals_a_photo_and_downloads_it(server, browser, photo):
    wait = WebDriverWait(browser, 120)
    browser.get(server)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
    Select(browser.find_element(By.ID, "model")).select_by_value("concealer-utkface-64")
    wait.until(ready.presence_of_element_located((By.ID, "attr-age")))
    browser.find_element(By.ID, "photo").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "before").is_displayed())

    browser.find_element(By.ID, "attr-age-unspecified").click()  # the slider comes alive
    browser.execute_script("const s = document.getElementById('attr-age'); s.value = 70; s.dispatchEvent(new Event('input'));")
    assert browser.find_element(By.ID, "attr-age-value").text == "70"
    Select(browser.find_element(By.ID, "attr-gender")).select_by_value("female")
    assert [o.text for o in Select(browser.find_element(By.ID, "attr-race")).options][0] == "unspecified"
    browser.find_element(By.ID, "submit").click()

    wait.until(lambda d: d.execute_script("const i = document.getElementById('after'); return !i.hidden && i.complete && i.naturalWidth > 0;"))
    assert browser.execute_script("return document.getElementById('after').naturalWidth") == 320
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Done") and "age=70" in status and "gender=female" in status
    assert browser.find_element(By.ID, "faces").text.endswith(("face", "faces"))
    screenshot(browser, "page.png")

    browser.find_element(By.ID, "download").click()
    wait.until(lambda d: any(p.suffix == ".png" for p in d.downloads.iterdir()))
    (downloaded,) = [p for p in browser.downloads.iterdir() if p.suffix == ".png"]
    assert downloaded.name == "astronaut-concealed.png"
    out = Image.open(downloaded)
    assert out.size == (320, 320) and len(out.getexif()) == 0
    before = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    changed = (np.abs(np.asarray(out.convert("RGB")).astype(int) - before).sum(axis=2) > 30).mean()
    assert 0.002 < changed < 0.5  # the face was re-rendered and pasted back; the rest of the photo is as it was


def test_page_shows_errors_in_one_line(server, browser, tmp_path):
    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
    Select(browser.find_element(By.ID, "model")).select_by_value("masker-lfw-gender")
    assert not browser.find_element(By.ID, "attributes").is_displayed()  # a masker takes no attributes
    fake = tmp_path / "notes.jpg"
    fake.write_bytes(b"not a photo")
    browser.find_element(By.ID, "photo").send_keys(str(fake))
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "status").text.startswith("not an image")


def test_docs_render_in_the_browser_from_loopback_alone(server, browser):
    """/docs draws the API (Swagger UI, the app's own copy) and every resource the page loaded came from the server."""
    browser.get(f"{server}/docs")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path")}
    assert {"/v1/apply", "/v1/models", "/health"} <= paths
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(server + "/") for u in loaded), [u for u in loaded if not u.startswith(server)]
