"""TFServingClient.classify/regress against the TF Serving TEST DOUBLE, over a tiny SavedModel
with real tensorflow/serving/classify and /regress signatures (tf.Example input), built here:
the bundle's own model only has predict signatures. What is checked is the client's half: the
features it encodes reach the graph (the scores are computed by TF from them), and the answers
decode to the right numbers. The double's wording of errors is not asserted."""

from __future__ import annotations

import numpy as np
import pytest

from clients import TFServingClient, errors


@pytest.fixture(scope="module")
def classify_double(tmp_path_factory):
    import tensorflow as tf

    from tests.doubles.tfserving_double import Models, TFServingDouble

    path = tmp_path_factory.mktemp("classify") / "1"
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        scores = tf.concat([x, 1.0 - x], axis=1)
        classes = tf.tile(tf.constant([["yes", "no"]]), [tf.shape(x)[0], 1])
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": tf.compat.v1.saved_model.classification_signature_def(
                    serialized, classes, scores),
                "score": tf.compat.v1.saved_model.regression_signature_def(serialized, x),
            })
            builder.save()
    models = Models()
    models.add("toy", 1, path)
    double = TFServingDouble(models).start()
    yield double
    double.stop()


@pytest.mark.parametrize("feature", [0.75, np.float32(0.75), [0.75], np.array([0.75])])
def test_classify_encodes_features_of_every_type(classify_double, feature):
    with TFServingClient(classify_double.rest_url, model="toy") as client:
        results = client.classify([{"x": feature}, {"x": 0.25}])
    assert [[label for label, _ in row] for row in results] == [["yes", "no"], ["yes", "no"]]
    assert [score for _, score in results[0]] == pytest.approx([0.75, 0.25])
    assert [score for _, score in results[1]] == pytest.approx([0.25, 0.75])


def test_regress_and_wrong_method(classify_double):
    with TFServingClient(classify_double.rest_url, model="toy") as client:
        assert client.regress([{"x": 0.5}, {"x": 2.0}], signature_name="score") == [0.5, 2.0]
        for call in (lambda: client.regress([{"x": 0.5}]),  # default is a classify signature
                     lambda: client.predict({"inputs": [b"x"]})):
            with pytest.raises(errors.InvalidInput) as info:
                call()
            assert info.value.status_code == 400 and info.value.attempts == 1
