"""The playground's two ways to reach a model give the server's replies, streamed.

Through a running ``tuneforge serve`` (the real ``openai`` client over HTTP) and
in-process (the serving engine in the UI's own process), a greedy reply is the one
the server's non-streaming chat completion gives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("gradio")
openai = pytest.importorskip("openai")

from serve_support import make_registry, running_server  # noqa: E402
from tuneforge.config.serve_schema import ServeConfig  # noqa: E402
from tuneforge.ui.playground import LocalModels, RemoteModels, Sampling, side_by_side  # noqa: E402

MESSAGES = [{"role": "user", "content": "Where is my parcel? It was due on Monday."}]
SAMPLING = Sampling(temperature=0.0, max_tokens=16, seed=0)


def served_reply(url: str, model: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=0, max_tokens=16, seed=0
    )
    return reply.choices[0].message.content


def last(models, pair: tuple[str, str]) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        updates = [u async for u in side_by_side(models, pair, (MESSAGES, MESSAGES), SAMPLING)]
        await models.close()
        return updates[-1]

    return asyncio.run(run())


def test_a_running_server_and_the_in_process_engine_give_the_served_replies(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = make_registry(tmp_path / "adapters", tiny_model_dir, ("alpha",))
    settings = ServeConfig(adapters_dir=str(registry))
    with running_server(tiny_model_dir, settings) as (url, _):
        remote = RemoteModels(url)
        assert remote.choices() == ["tiny", "tiny:alpha"]
        expected = (served_reply(url, "tiny"), served_reply(url, "tiny:alpha"))
        assert expected[0] and expected[0] != expected[1]  # the adapter changes the reply
        assert last(remote, ("tiny", "tiny:alpha")) == expected
    local = LocalModels(tmp_path / "no-runs", [tiny_model_dir])
    assert local.choices() == [str(tiny_model_dir.resolve())]
    choice = str(tiny_model_dir.resolve())
    assert last(local, (choice, choice)) == (expected[0], expected[0])


def test_an_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"http://127\.0\.0\.1:9/v1/models"):
        RemoteModels("http://127.0.0.1:9").choices()
