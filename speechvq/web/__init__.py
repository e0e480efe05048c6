"""`speechvq serve`: a local web page over the library (issue 19).

Record or upload speech, convert it to a named voice or to the voice of a
reference recording, compress and decompress it (beside codec2 and Opus when
their tools are installed), sample from the prior, and listen to and look
at every result. Layers: `work` (what each button does, as plain functions
over NumPy audio that write their files into a folder), `jobs` (one worker
thread that runs them, with progress and a folder per job), `app` (the
Starlette routes over both) and `static/` (plain HTML, CSS and JavaScript).
Starlette and uvicorn come with the `web` extra and are imported only here.
"""
