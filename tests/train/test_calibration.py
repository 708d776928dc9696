"""int8 calibration ranges stored with a model (mrl.calibration) and used by the embeddings endpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
from sentence_transformers.util.quantization import quantize_embeddings

from mrl.index import Index
from mrl.model import load_model
from mrl.serve.openai_api import Calibration, encode_output
from mrl.train.calibration import int8_calibration, int8_ranges, stored_int8_ranges
from mrl.vectors.prefix import prefix


def test_ranges_are_the_extremes_of_each_renormalized_prefix(corpus):
    vectors = corpus[3]
    ranges = int8_ranges(vectors, [64, 384])
    assert set(ranges) == {"64", "384"}
    np.testing.assert_allclose(np.asarray(ranges["64"])[0], prefix(vectors, 64).min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ranges["64"])[1], prefix(vectors, 64).max(axis=0), rtol=1e-6)


def test_stored_ranges_travel_with_the_model_and_code_every_request_alike(corpus, model, tmp_path):
    _, data, docs, vectors = corpus
    folder = tmp_path / "model"
    shutil.copytree(model.mrl_source, folder)
    copy = load_model(str(folder))
    assert stored_int8_ranges(copy, 64) is None  # a model mrl did not train has none
    (folder / "mrl.json").write_text(json.dumps(int8_calibration(copy, list(data.corpus.values()), [64, 128])))
    stored = stored_int8_ranges(copy, 64)
    assert stored.shape == (2, 64) and np.all(stored[0] < stored[1])
    assert stored_int8_ranges(copy, 384) is not None and stored_int8_ranges(copy, 32) is None

    # the endpoint's calibration takes the model's ranges over the index's vectors
    index = Index.build(tmp_path / "idx", vectors, docs, model=str(folder), loaded_model=copy)
    calibration = Calibration(index)
    np.testing.assert_array_equal(calibration.ranges(64), stored)
    floats = prefix(copy.encode(["vitamin D and fractures", "a cat on a mat"]), 64)
    codes = np.asarray(encode_output(floats, "int8", calibration))
    np.testing.assert_array_equal(codes, quantize_embeddings(floats, precision="int8", ranges=stored))
