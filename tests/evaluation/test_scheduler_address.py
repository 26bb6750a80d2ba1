"""A scheduler address that does not answer, or is not an address, is a one-line error
naming it (after connect_timeout seconds at most)."""

import socket

import pytest

from sttn_sim.evaluation import EvaluationError, ModelSpec, evaluate
from sttn_sim.images import digits_source


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", [f"tcp://127.0.0.1:{_free_port()}", "tcp://127.0.0.1:notaport"],
                         ids=["closed-port", "not-a-port"])  # fixed ids: every pytest-xdist worker collects the same tests
def test_unreachable_or_malformed_scheduler(address):
    with pytest.raises(EvaluationError, match="--scheduler " + address.replace(".", r"\.")):
        evaluate(ModelSpec.of(None), digits_source(), scheduler=address, connect_timeout=1.0, check=0, limit=4)
