"""`speechvq serve`: the API in-process (Starlette's test client), and the page in a
real headless browser where Chromium and its driver are installed."""

from __future__ import annotations

import io
import time

import pytest
import soundfile as sf
import torch

pytest.importorskip("starlette")
pytest.importorskip("starlette.testclient")  # with httpx2 (or httpx)

import speechvq  # noqa: E402
from speechvq.config import ModelConfig  # noqa: E402

from .conftest import synth_speechlike  # noqa: E402


def _wav(seconds: float = 1.5, rate: int = 16000, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synth_speechlike(seconds, rate, seed=seed), rate, format="WAV")
    return buf.getvalue()


def _model(preset: str):
    torch.manual_seed(0)
    return speechvq.SpeechVQ(ModelConfig.preset(preset, speakers=["alice", "bob"])).eval()


def _client(model, **kw):
    from starlette.testclient import TestClient

    from speechvq.web.app import create_app

    return TestClient(create_app(model, baselines="none", **kw), raise_server_exceptions=False)


def _finish(client, response) -> dict:
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]
    for _ in range(600):
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture
def client():
    with _client(_model("tiny-sf")) as c:
        yield c


@pytest.fixture
def spk_client():
    with _client(_model("tiny-sf-spk")) as c:
        yield c


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="audio-file"' in page.text
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["speakers"] == ["alice", "bob"] and not info["speaker_encoder"]
    rows = dict(info["rows"])
    assert rows["sample rate"] == "16000 Hz" and rows["speakers"] == "2"


def test_convert_to_a_name_plays_downloads_and_draws(client):
    job = _finish(
        client,
        client.post("/api/convert", files={"audio": ("a.wav", _wav())}, data={"target": "bob"}),
    )
    assert job["state"] == "done", job
    res = job["result"]
    names = [a["file"] for a in res["audio"]]
    assert names == ["input.wav", "converted.wav"] and res["spectrogram"] == "spectrogram.png"
    got = client.get(f"/api/jobs/{job['id']}/files/converted.wav")
    assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
    wave, rate = sf.read(io.BytesIO(got.content))
    assert rate == 16000 and abs(wave.size - 1.5 * 16000) < 64
    png = client.get(f"/api/jobs/{job['id']}/files/spectrogram.png")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_upload_at_another_rate_is_resampled(client):
    job = _finish(client, client.post("/api/convert", files={"audio": ("a.wav", _wav(1.0, 44100))}))
    wave, rate = sf.read(io.BytesIO(client.get(f"/api/jobs/{job['id']}/files/input.wav").content))
    assert job["state"] == "done" and rate == 16000 and wave.size == 16000


def test_compress_reports_the_bitrate_and_serves_the_svq(client):
    job = _finish(client, client.post("/api/compress", files={"audio": ("a.wav", _wav(2.0))}))
    assert job["state"] == "done", job
    res = job["result"]
    svq = client.get(f"/api/jobs/{job['id']}/files/compressed.svq").content
    kbps = float(dict(res["table"])["speechvq (.svq, all of the file)"])
    assert svq[:4] == b"SVQ1" or len(svq) > 0
    assert kbps == pytest.approx(8 * len(svq) / 2.0 / 1000, abs=0.006)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (
            {"files": {"audio": ("x.wav", b"not audio at all")}},
            400,
            "x.wav: not a readable audio file",
        ),
        ({"files": {"audio": ("x.wav", b"")}}, 400, "empty"),
        ({"data": {"target": "bob"}}, 400, "no audio file"),
        (
            {"files": {"audio": ("x.wav", _wav())}, "data": {"target": "carol"}},
            400,
            "unknown speaker 'carol'",
        ),
        (
            {"files": {"audio": ("x.wav", _wav(), "audio/wav"), "reference": ("r.wav", _wav())}},
            400,
            "no speaker encoder",
        ),
    ],
)
def test_a_bad_request_is_one_line_and_the_server_goes_on(client, payload, status, message):
    r = client.post("/api/convert", **payload)
    assert r.status_code == status and message in r.json()["error"]
    assert "\n" not in r.json()["error"] and "Traceback" not in r.text
    assert client.get("/api/info").status_code == 200


def test_too_long_and_too_large_uploads_are_refused():
    with _client(_model("tiny-sf"), max_seconds=1.0, max_upload_mb=0.1) as c:
        long = c.post("/api/convert", files={"audio": ("l.wav", _wav(1.5))})
        assert (
            long.status_code == 400 and "1.5 s; this server takes up to 1 s" in long.json()["error"]
        )
        big = c.post("/api/convert", files={"audio": ("b.wav", _wav(4.0))})
        assert big.status_code == 413 and "this server takes up to 0.1 MB" in big.json()["error"]


def test_no_path_from_the_client_is_served(client):
    job = _finish(client, client.post("/api/convert", files={"audio": ("a.wav", _wav())}))
    for name in ("../../etc/passwd", "..%2f..%2fapp.py", "%2e%2e%2fapp.py", ".hidden", "nope.wav"):
        r = client.get(f"/api/jobs/{job['id']}/files/{name}")
        assert r.status_code == 404, name
    assert client.get("/api/jobs/not-a-job").status_code == 404


def test_temporary_files_are_removed():
    with _client(_model("tiny-sf")) as c:
        root = c.app.state.jobs.root
        job = _finish(c, c.post("/api/convert", files={"audio": ("a.wav", _wav())}))
        assert (root / job["id"] / "converted.wav").is_file()
        assert not list(root.glob("*.upload"))  # the upload is gone once read
    assert not root.exists()


def test_convert_to_a_reference_recording(spk_client):
    data = {
        "files": [("audio", ("a.wav", _wav(seed=1))), ("reference", ("r.wav", _wav(2.0, seed=2)))]
    }
    job = _finish(spk_client, spk_client.post("/api/convert", **data))
    assert job["state"] == "done", job
    assert "reference" in job["result"]["title"]
    short = spk_client.post(
        "/api/convert", files=[("audio", ("a.wav", _wav())), ("reference", ("r.wav", _wav(0.5)))]
    )
    assert short.status_code == 400 and "under 1 s" in short.json()["error"]


def test_sample_needs_a_prior_and_a_sane_length(client):
    r = client.post("/api/sample", data={"speaker": "alice", "seconds": "2"})
    assert r.status_code == 400 and "no prior" in r.json()["error"]


def test_sample_from_the_prior_with_progress():
    from speechvq.models.prior import Prior, PriorConfig

    model = _model("tiny-sf")
    model.prior = Prior(
        PriorConfig.preset("tiny", codebook_size=model.config.quantizer.codebook_size, speakers=2)
    ).eval()
    with _client(model) as c:
        assert c.post("/api/sample", data={"seconds": "99"}).status_code == 400
        job = _finish(c, c.post("/api/sample", data={"speaker": "bob", "seconds": "1"}))
        assert job["state"] == "done", job
        wave, _ = sf.read(io.BytesIO(c.get(f"/api/jobs/{job['id']}/files/sample.wav").content))
        assert wave.size == 16000


# ---- the page in a real browser ------------------------------------------------------


def _browser():
    """Headless Chromium through its system driver, or skip."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or browser is None:
        pytest.skip("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1500",
        "--use-fake-ui-for-media-stream",  # the microphone: allowed, and a test tone
        "--use-fake-device-for-media-stream",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


@pytest.fixture
def served():
    """The app over a tiny model, served by uvicorn on a free port in a thread."""
    import threading

    import uvicorn

    from speechvq.web.app import create_app

    from .conftest import free_port

    port = free_port()
    app = create_app(_model("tiny-sf"), model_name="tiny-sf (untrained)", baselines="none")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_the_page_uploads_converts_and_shows_the_result(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wav = tmp_path / "speech.wav"
    wav.write_bytes(_wav(2.0))
    driver = _browser()
    try:
        driver.get(served)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#info tr")) > 3)
        driver.find_element(By.ID, "audio-file").send_keys(str(wav))
        wait.until(lambda d: d.find_element(By.ID, "convert").is_enabled())
        driver.find_element(By.ID, "convert").click()
        result = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card audio.result"))
        assert "/files/converted.wav" in result[0].get_attribute("src")
        loaded = (
            "const i = document.querySelector('.card img.spectrogram');"
            "return i && i.complete && i.naturalWidth"
        )
        assert wait.until(lambda d: d.execute_script(loaded)) > 100
        duration = "return document.querySelector('.card audio.result').duration"
        assert abs(wait.until(lambda d: d.execute_script(duration)) - 2.0) < 0.05
        # a bad upload: a message on the page, and the page goes on working
        bad = tmp_path / "notes.wav"
        bad.write_text("not audio")
        driver.find_element(By.ID, "audio-file").send_keys(str(bad))
        driver.find_element(By.ID, "compress").click()
        error = wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "notes.wav: not a readable audio file" in error
    finally:
        driver.quit()


def test_the_page_records_from_the_microphone(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    try:
        driver.get(served)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#info tr"))
        driver.find_element(By.ID, "record").click()
        wait.until(lambda d: d.find_element(By.ID, "stop").is_enabled())
        time.sleep(1.5)
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: d.find_element(By.ID, "convert").is_enabled())
        seconds = "return document.getElementById('input-audio').duration"
        assert 1.0 < wait.until(lambda d: d.execute_script(seconds)) < 3.0
        assert "recording.wav" in driver.find_element(By.ID, "input-name").text
    finally:
        driver.quit()
