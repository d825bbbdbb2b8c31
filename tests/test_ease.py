"""EASE: the closed form against known answers, its ranking, its teacher distribution, saving and the
commands that train it (baselines) and read it (fit-readout's teachers)."""

import json

import numpy as np
import pytest
import torch

from m6gen.baselines.ease import EASE, EASEConfig, load_ease
from m6gen.model import ModelError


def test_two_items_always_together_give_the_ridge_answer():
    # X = three users with items 0 and 1: G + l2 I = [[4, 3], [3, 4]], so B[0, 1] = 3 / (3 + 1)
    ease = EASE.fit([[0, 1], [1, 0], [0, 1]], 2, EASEConfig(l2=1.0))
    np.testing.assert_allclose(ease.weights, [[0.0, 0.75], [0.75, 0.0]], rtol=1e-6)


def test_each_column_is_the_ridge_regression_on_the_other_items():
    """The closed form equals, column by column, ridge regression of item j on every other item."""
    rng = np.random.default_rng(0)
    histories = [list(rng.choice(6, size=rng.integers(1, 5), replace=False)) for _ in range(20)]
    ease = EASE.fit(histories, 6, EASEConfig(l2=2.0))
    x = np.zeros((20, 6))
    for row, h in enumerate(histories):
        x[row, h] = 1
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        b = np.linalg.solve(a.T @ a + 2.0 * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(ease.weights[others, j], b, rtol=1e-4, atol=1e-6)
        assert ease.weights[j, j] == 0


def test_recommend_scores_by_the_history_and_excludes_it():
    weights = np.array([[0, 2, 1, 0], [0, 0, 0, 3], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    ease = EASE(weights, EASEConfig())
    np.testing.assert_array_equal(ease.score([[0, 1]]), [[0, 2, 1, 3]])
    assert ease.recommend([[0, 1]], 2, exclude=[{0, 1}])[0].tolist() == [3, 2]
    assert ease.recommend([[]], 4, exclude=[set()])[0].tolist() == [0, 1, 2, 3]  # ties: lower index first
    with pytest.raises(ValueError, match="out of range"):
        ease.score([[4]])


def test_log_probs_are_a_softmax_at_the_temperature():
    weights = np.array([[0, 1, 2], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    ease = EASE(weights, EASEConfig(temperature=3.0))
    expected = torch.log_softmax(3.0 * torch.tensor([[0.0, 1.0, 2.0]]), -1).numpy()
    np.testing.assert_allclose(ease.log_probs([[0]]), expected, rtol=1e-5)


@pytest.mark.parametrize("bad", [{"l2": 0}, {"l2": -1.0}, {"temperature": float("nan")}, {"l2": True}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="EASEConfig"):
        EASEConfig(**bad)


def test_save_and_load_round_trip(tmp_path):
    ease = EASE.fit([[0, 1, 2], [1, 2], [2, 3]], 4, EASEConfig(l2=5.0, temperature=10.0))
    ease.save(tmp_path / "ease")
    loaded = load_ease(tmp_path / "ease", 4)
    np.testing.assert_array_equal(loaded.weights, ease.weights)
    assert loaded.config == ease.config
    with pytest.raises(ModelError, match="fitted on 4 items, the catalog has 5"):
        load_ease(tmp_path / "ease", 5)
    with pytest.raises(ModelError, match="no saved EASE"):
        load_ease(tmp_path, 4)


def test_teacher_log_probs_average_kind_by_kind():
    """Two SASRecs and one EASE: the SASRecs' mean and EASE's log-probabilities count half each."""
    from m6gen.baselines.sasrec import SASRec, SASRecConfig
    from m6gen.commands.fit_readout import describe_teachers, teacher_log_probs

    config = SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=6, dropout=0.0)
    torch.manual_seed(0)
    one, two = SASRec(5, config), SASRec(5, config)
    ease = EASE.fit([[0, 1], [1, 2, 3], [3, 4]], 5, EASEConfig(l2=1.0))
    histories = [[1, 2], [4]]

    def log_softmax(s):
        return torch.log_softmax(torch.from_numpy(s.score(histories)), -1).numpy()

    sasrecs = (log_softmax(one) + log_softmax(two)) / 2
    expected = (sasrecs + ease.log_probs(histories)) / 2
    np.testing.assert_allclose(teacher_log_probs([one, ease, two], histories), expected, rtol=1e-5)
    np.testing.assert_allclose(teacher_log_probs([ease], histories), ease.log_probs(histories), rtol=1e-6)
    assert describe_teachers([one, two, ease]) == "2 SASRec(s) and 1 EASE"


@pytest.fixture
def plain_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    items = "".join(json.dumps({"item_id": str(i), "title": f"Film {i} ({1990 + i})"}) + "\n" for i in range(10))
    (data / "items.jsonl").write_text(items, encoding="utf-8")
    rows = ["user_id,item_id,timestamp"]
    for u in range(30):
        rows += [f"u{u},{(u + t) % 10},{t}" for t in range(6)]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return data


def test_baselines_command_fits_and_saves_ease(plain_data, tmp_path, capsys):
    from m6gen.commands import main

    out = tmp_path / "b"
    argv = ["baselines", "--data", str(plain_data), "--methods", "EASE", "--no-progress", "--out", str(out)]
    assert main([*argv, "--ease-l2", "7"]) == 0
    assert "| EASE |" in capsys.readouterr().out
    saved = json.loads((out / "baselines.json").read_text())
    assert set(saved["test"]) == {"EASE"} and saved["ease"]["config"]["l2"] == 7.0
    assert saved["test"]["EASE"]["SeenRate"] == 0.0  # history excluded
    assert load_ease(out / "ease", 10).config.l2 == 7.0 and not (out / "sasrec").exists()
    assert main([*argv, "--ease-l2", "0"]) == 2
    err = capsys.readouterr().err
    assert "ease_l2: a number > 0" in err and err.count("\n") == 1
