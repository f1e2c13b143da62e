import numpy as np
import pytest

from kan_core.errors import ConfigError
from kan_core.sklearn import KANClassifier, KANRegressor


def test_regressor_in_original_units_and_multi_output():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (400, 2)) * [100, 1] + [500, 0]
    y = 1000 + 3 * (x[:, 0] - 500) + 50 * np.sin(x[:, 1])
    reg = KANRegressor(hidden=(4,), steps=30).fit(x, y)
    assert reg.predict(x).shape == (400,)
    assert reg.score(x, y) > 0.99
    y2 = np.c_[y, x[:, 1] ** 2]
    reg2 = KANRegressor(hidden=(4,), steps=30).fit(x, y2)
    assert reg2.predict(x[:5]).shape == (5, 2) and reg2.score(x, y2) > 0.98


def test_classifier_labels_and_probabilities():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    y = np.where(x[:, 0] + x[:, 1] > 0, "hot", "cold")
    clf = KANClassifier(hidden=(3,), steps=150).fit(x, y)
    proba = clf.predict_proba(x)
    assert proba.shape == (300, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(clf.predict(x)) <= {"hot", "cold"} and clf.score(x, y) > 0.95


def test_unfitted_and_wrong_shape_errors():
    with pytest.raises(ConfigError, match="not fitted"):
        KANRegressor().predict([[1.0]])
    reg = KANRegressor(steps=2).fit(np.random.rand(20, 2), np.random.rand(20))
    with pytest.raises(ConfigError, match="features"):
        reg.predict(np.random.rand(3, 5))
    with pytest.raises(ConfigError, match="NaN"):
        KANRegressor().fit([[np.nan, 1.0]], [1.0])
