import pytest_twisted


@pytest_twisted.ensureDeferred
async def test_two_clients_match_and_chat(server):
    a, b = await server.pair()
    a.send("message", {"content": "hi"})
    m = await b.expect("message")
    assert m["data"]["content"] == "hi"
