"""The launched app, driven over real HTTP through gradio_client."""

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    from app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(str(tiny_model_dir))
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_generate_returns_n_titles_and_names_the_model(client, tiny_model_dir):
    table, raw, status = client.predict("Multimodal RAG", 3, 0.7, api_name="/generate")
    assert table["headers"] == ["Title", "Characters"]
    assert len(table["data"]) == 3
    assert all(row[1] == len(row[0]) for row in table["data"])
    assert len(raw) == 3
    assert str(tiny_model_dir) in status


def test_model_status_is_shown_on_load(client, tiny_model_dir):
    assert client.predict(api_name="/model_status").startswith(f"Model: {tiny_model_dir}")


@pytest.mark.parametrize(("idea", "message"), [("   ", "empty"), ("x" * 501, "limit is 500")])
def test_bad_ideas_get_a_clear_error(client, idea, message):
    with pytest.raises(Exception, match=message):
        client.predict(idea, 3, 0.7, api_name="/generate")


def test_an_unloadable_model_is_reported_not_crashed(tmp_path):
    from gradio_client import Client

    from app import build_app

    app = build_app(str(tmp_path / "missing"))
    app.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True)
    try:
        client = Client(app.local_url, verbose=False)
        assert "could not be loaded" in client.predict(api_name="/model_status")
        with pytest.raises(Exception, match="does not exist"):
            client.predict("rag", 2, 0.7, api_name="/generate")
    finally:
        app.close()
