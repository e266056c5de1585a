"""The Kafka dev tool's own helpers (devtools/kafka.py), where a slip costs a flaky CI run."""

from __future__ import annotations

import base64

from devtools.kafka import new_cluster_id


def test_cluster_ids_never_look_like_an_option() -> None:
    # one raw id in 64 starts with `-`; 2,000 draws meet one with certainty if unfiltered
    ids = {new_cluster_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
