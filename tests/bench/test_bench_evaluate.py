"""sttn_sim.bench.evaluate at test size: every part measured on the images it was given,
shares and ratios where they can be (no timing is asserted)."""

import numpy as np
import pytest

from sttn_sim.bench.evaluate import benchmark_evaluate


@pytest.mark.slow
def test_rows_of_every_part():
    table = benchmark_evaluate(6, batch=4, repeats=1, workers=2, decode_workers=(0, 1), width=0.125, input_size=32,
                               num_classes=10)
    assert table["part"].tolist() == ["decode", "decode", "engine", "evaluate", "evaluate", "dask", "dask", "dask", "dask"]
    runs = table[table["part"].isin(["decode", "evaluate"])]
    assert (runs["images"] == 6).all() and np.isfinite(runs["seconds"]).all()
    assert np.allclose(runs["images_per_s"], runs["images"] / runs["seconds"])
    assert table.loc[table["part"] == "engine", "images"].item() == 4
    share = table.loc[table["part"] == "evaluate", "outside_engine_share"]
    assert ((share >= 0) & (share <= 1)).all()
    dask = table[table["part"] == "dask"]
    assert dask["images"].tolist() == [0, 6, 6, 6] and np.isnan(dask["images_per_s"].iloc[0])
    assert np.isfinite(dask["vs_one_process"].iloc[3])
    assert table["load_before"].notna().all() and table["load_after"].notna().all()
