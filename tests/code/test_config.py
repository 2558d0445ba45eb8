"""The one run specification: validated once, errors naming the file and the key path."""
import pytest

from lvmlib.cli import main as lvm
from lvmlib.config import ConfigError, RunSpec, expand, merge, read_run_spec, read_yaml, run_spec

GOOD = """
seed: 1
data: {bank: data/bank-tiny, train_concepts: 500}
model: {name: lstm, options: {hidden: 16}}
loss: {mse: 1.0}
train: {epochs: 2, batch_size: 32, schedule: cosine, warmup_steps: 10}
eval: {rows: 100}
"""


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_file_reads_into_typed_sections(tmp_path):
    spec = read_run_spec(write(tmp_path, GOOD))
    assert isinstance(spec, RunSpec) and spec.model.options == {"hidden": 16}
    assert spec.train.epochs == 2 and spec.train.lr == 5e-4 and isinstance(spec.train.lr, float)
    assert spec.data.train_concepts == 500 and spec.eval.rows == 100 and spec.seed == 1
    assert run_spec(spec.to_dict()) == spec                       # round trip through plain data


@pytest.mark.parametrize("text, key", [
    ("model: {name: lstm}\ntrain: {epochs: 2, lr_decay: 0.1}\n", "params.train.lr_decay"),
    ("model: {name: lstm}\nepochs: 3\n", "params.epochs"),
    ("model: {name: lstm}\ndata: {bank: x, shards: 2}\n", "params.data.shards"),
    ("model: {name: lstm}\nloss: {mse: 1.0, lambda_dir: 0.002}\n", "loss.lambda_dir"),
    ("model: {name: lstm}\ndata: {synthetic: {lenght: 3}}\n", "params.data.synthetic.lenght"),
])
def test_unknown_keys_name_file_and_key_path(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"run.yaml: .*{key}"):
        read_run_spec(write(tmp_path, text))


@pytest.mark.parametrize("text, key", [
    ("model: {name: lstm}\ntrain: {epochs: three}\n", "params.train.epochs must be an int"),
    ("model: {name: lstm}\ntrain: {epochs: 0}\n", "params.train.epochs must be >= 1"),
    ("model: {name: lstm}\ntrain: {lr: true}\n", "params.train.lr must be a number"),
    ("model: {name: lstm}\nseed: 1.5\n", "params.seed must be an int"),
    ("model: {name: lstm, options: [1]}\n", "params.model.options must be a mapping"),
    ("model: {name: lstm}\ntrain: {schedule: step}\n", "params.train.schedule must be 'plateau' or 'cosine'"),
    ("model: {name: lstm}\ntrain: {stop_metric: mse}\n", "params.train.stop_metric must be one of cosine, loss"),
    ("model: {name: lstm}\ntrain: {precision: fp16}\n", "params.train.precision must be one of fp32, bf16, auto"),
    ("model: {name: lstm}\ntrain: {patience_steps: -1}\n", "params.train.patience_steps must be >= 0"),
    ("model: {name: lstm}\ntrain: {val_rows: 0}\n", "params.train.val_rows must be >= 1"),
    ("model: {name: lstm}\ntrain: {early_stop_patience: 2}\n", "unknown key params.train.early_stop_patience"),
    ("model: lstm\n", "params.model must be a mapping"),
    ("seed: 0\n", "missing key params.model"),
])
def test_wrong_types_and_missing_keys_name_file_and_key_path(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"run.yaml: {key}"):
        read_run_spec(write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read the params file"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_yaml(write(tmp_path, "a: [1,\n", "bad.yaml"))


def test_lvm_train_exits_2_naming_file_and_key(tmp_path, capsys):
    path = write(tmp_path, "model: {name: lstm}\ntrain: {epochs: 2, lr_decay: 0.1}\n")
    assert lvm(["train", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "run.yaml" in err and "params.train.lr_decay" in err and "Traceback" not in err


def test_expand_crosses_axes_and_seeds():
    base = {"model": {"name": "lstm", "options": {"hidden": 8}}, "train": {"epochs": 2}}
    axes = {"model": {"LSTM": {}, "GRU": {"model": {"name": "gru"}}},
            "loss": {"MSE": {"loss": {"mse": 1.0}}, "InfoNCE": {"loss": {"mse": 0.0, "info_nce": 1.0}}}}
    specs = expand(base, axes, seeds=[0, 1])
    assert len(specs) == 8 and specs[0].label == "LSTM · MSE · seed 0"
    assert specs[-1].tags == {"model": "GRU", "loss": "InfoNCE", "seed": 1} and specs[-1].seed == 1
    assert specs[-1].model.options == {"hidden": 8}                   # merged onto the base
    assert expand(base)[0].label is None and len(expand(base, seeds=[3])) == 1
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(ConfigError, match="p.yaml: .*params.train.epochs"):
        expand(base, {"x": {"bad": {"train": {"epochs": "2"}}}}, source="p.yaml")
