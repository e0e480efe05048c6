"""Make docs/img/web.png, the README's picture of `speechvq serve`.

    python docs/screenshot.py [MODEL] [AUDIO]

Serves MODEL (default: the shipped default) on a free port, opens the page
in headless Chromium (system chromium and chromium-driver), uploads AUDIO
(default: examples/demo.wav, the synthesised demo input),
converts it to the model's second voice and compresses it, then saves the
window.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import speechvq
from speechvq.web.app import create_app


def main() -> None:
    model_name = sys.argv[1] if len(sys.argv) > 1 else None
    audio = Path(sys.argv[2] if len(sys.argv) > 2 else "examples/demo.wav").resolve()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(speechvq.load(model_name), model_name=model_name or "default")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1000,2300"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#info tr"))
        driver.find_element(By.ID, "audio-file").send_keys(str(audio))
        Select(driver.find_element(By.ID, "target")).select_by_index(1)
        driver.find_element(By.ID, "convert").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card audio.result"))
        driver.find_element(By.ID, "compress").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card img.spectrogram")) > 1)
        time.sleep(2)  # the pictures load
        driver.save_screenshot("docs/img/web.png")
    finally:
        driver.quit()
        server.should_exit = True
    print("wrote docs/img/web.png")


if __name__ == "__main__":
    main()
