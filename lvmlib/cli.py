"""The `lvm` command: `lvm data build|card`, `train --params FILE`, `eval --checkpoint FILE`,
`report NOTEBOOK | --index`, `bench NAME` (`lvm COMMAND -h` lists the options). Exit codes: lvmlib.errors."""
from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import sys
from pathlib import Path

from .errors import EXIT_INPUT, EXIT_INTERNAL, InputError


def _parser() -> argparse.ArgumentParser:
    from .data import DEFAULT_BANK, DEFAULT_MAX_ARTICLES
    from .data.encode import DEFAULT_ENCODER, VARIANTS
    p = argparse.ArgumentParser(prog="lvm", description="lvm-lab: next-concept-vector prediction.")
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="build or describe a concept bank")
    data = data.add_subparsers(dest="data_cmd", required=True)
    b = p.build_parser = data.add_parser("build", help="corpus -> concepts -> vectors -> bank folder (resumable)")
    b.add_argument("--corpus", help="JSON lines of articles, plain or .gz (default: $LVM_CORPUS or "
                                    "../shared/corpora/enwiki-2015-25k.jsonl.gz)")
    b.add_argument("--out", default=DEFAULT_BANK, help=f"bank folder (default {DEFAULT_BANK})")
    b.add_argument("--max-articles", type=int, default=DEFAULT_MAX_ARTICLES,
                   help=f"first N articles (default {DEFAULT_MAX_ARTICLES}; 0 = all)")
    b.add_argument("--encoder", default=DEFAULT_ENCODER, help="sentence-transformers name or path")
    b.add_argument("--encoder-variant", default="int8", choices=VARIANTS,
                   help="int8 (default) / bf16: OpenVINO on the CPU, ~3.4x / ~2.3x faster than fp32 here, mean "
                        "cosine to fp32 0.998 / 0.99999; fp32: sentence-transformers, the reference")
    b.add_argument("--device", default=None, help="encoder device (default: auto)")
    for name, default in (("batch-size", 32), ("target-words", 60), ("min-words", 10), ("max-words", 400),
                          ("split-seed", 0), ("shard-size", 2048), ("val-fraction", 0.1), ("ood-fraction", 0.1)):
        b.add_argument(f"--{name}", type=type(default), default=default)
    b.add_argument("--skip-bad", action="store_true", help="skip and count malformed corpus lines")
    b.add_argument("--force", action="store_true", help="replace an existing bank built with other settings")
    b.add_argument("--params", help="YAML mapping of any of these options (e.g. corpus: PATH, max_articles: 0); "
                                    "flags given on the command line win")
    data.add_parser("card", help="print a bank's dataset card").add_argument("bank", nargs="?", default=DEFAULT_BANK)
    t = sub.add_parser("train", help="train one run spec (see lvmlib/config.py)")
    t.add_argument("--params", required=True, help="run spec YAML file")
    t.add_argument("--resume", action="store_true", help="continue from out/last.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    e = sub.add_parser("eval", help="evaluate a checkpoint: cosine with CI, baselines, LCM metrics, 5CAT")
    e.add_argument("--checkpoint", required=True, help="checkpoint file written by lvm train")
    e.add_argument("--split", choices=("val", "ood"), default="val")
    e.add_argument("--json", help="also write the full result document here (atomically)")
    e.add_argument("--max-rows", type=_positive_int, help="seeded random subset of rows per split")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    r = sub.add_parser("report", help="run a notebook into a versioned HTML report")
    r.add_argument("notebook", nargs="?", help="the .ipynb to execute")
    r.add_argument("--params", metavar="FILE", help="YAML mapping of notebook parameters")
    r.add_argument("--outputs", metavar="DIR", default="outputs", help="outputs root (default: outputs)")
    r.add_argument("--timeout", metavar="S", type=int, default=1800, help="per-cell timeout in seconds")
    r.add_argument("--index", action="store_true", help="only rebuild <outputs>/index.html")
    bench = sub.add_parser("bench", help="run a benchmark script from benchmarks/")
    bench.add_argument("name", choices=("data", "models", "eval", "encode"))
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _data(args, parser) -> int:
    from .data import BankError, ChunkerConfig, BuildConfig, build_bank, dataset_card, format_card, load_bank
    if args.data_cmd == "card":
        print(format_card(dataset_card(load_bank(args.bank))))
        return 0
    if args.params:
        args = _with_file_options(args, parser)
    try:
        chunker = ChunkerConfig(args.target_words, args.min_words, args.max_words)
    except ValueError:
        raise BankError(f"--min-words {args.min_words}, --target-words {args.target_words}, --max-words "
                        f"{args.max_words}: need 0 < min_words <= target_words <= max_words") from None
    cfg = BuildConfig(corpus=args.corpus, max_articles=args.max_articles or None, skip_bad=args.skip_bad,
                      encoder=args.encoder, encoder_variant=args.encoder_variant,
                      encode_batch_size=args.batch_size, device=args.device, chunker=chunker,
                      val_fraction=args.val_fraction, ood_fraction=args.ood_fraction,
                      split_seed=args.split_seed, shard_size=args.shard_size)
    print(format_card(dataset_card(build_bank(args.out, cfg, force=args.force))))   # --force deletes under the lock
    return 0


def _with_file_options(args, parser):
    """`lvm data build --params FILE`: options from a YAML mapping, each checked with its flag's type;
    flags given on the command line win (the file's values become the defaults, then argv is parsed again)."""
    from .config import ConfigError, read_yaml
    values = read_yaml(args.params, what="build params")
    if not isinstance(values, dict):
        raise ConfigError(f"{args.params}: build params must be a mapping of option: value")
    actions = {a.dest: a for a in parser.build_parser._actions if a.dest not in ("help", "params")}
    options = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"{args.params}: unknown build option {key!r}; expected some of {sorted(actions)}")
        kind = actions[dest].type or (None if isinstance(actions[dest].default, bool) else str)
        if kind is str and value is not None and not isinstance(value, str):
            raise ConfigError(f"{args.params}: {key}: {value!r} must be a string")
        try:
            options[dest] = kind(value) if kind is not None and value is not None else value
        except (TypeError, ValueError):
            raise ConfigError(f"{args.params}: {key}: {value!r} is not a valid {kind.__name__}") from None
    parser.build_parser.set_defaults(**options)
    return parser.parse_args(args.argv)


def _train(args, parser) -> int:
    from .config import read_run_spec
    from .training import train
    result = train(read_run_spec(args.params), resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:   # the process group is gone by now
        where = f"  checkpoint {result.checkpoint}" if result.checkpoint else ""
        print(f"best epoch {result.best_epoch}  val_loss {result.best_val_loss:.6f}  "
              f"val_cosine {result.best_val_cosine:.4f}  ({result.epochs_run} epochs, {result.optimizer_steps} steps, "
              f"stopped: {result.stop_reason}, converged: {result.converged}){where}")
    return 0


def evaluate_checkpoint(path, split: str = "val", max_rows: int | None = None, *, seed: int = 0,
                        device: str = "cpu", n_boot: int = 1000) -> dict:
    """Evaluate a verified checkpoint on the bank its run spec names (a folder, else one next to the
    checkpoint), refusing a bank other than the one it trained on."""
    from . import files
    from .data import open_bank
    from .evaluation import EvalError, evaluate, predictor
    from .training import fingerprint_of, load_checkpoint
    model, info = load_checkpoint(path, map_location="cpu")
    data, fingerprint = (info.get("spec") or {}).get("data") or {}, fingerprint_of(info)
    if data.get("synthetic") is not None:
        bank = open_bank({"synthetic": data["synthetic"]})
    elif data.get("bank"):
        beside = Path(path).parent / data["bank"]     # an absolute bank path stays itself
        bank = open_bank(str(beside if not Path(data["bank"]).exists() and beside.exists() else data["bank"]))
    else:
        raise EvalError(f"{path}: the checkpoint's run spec names no bank (data.bank or data.synthetic)")
    if bank.manifest.get("fingerprint") != fingerprint:
        raise EvalError(f"bank {bank.path or '(in memory)'} has fingerprint {bank.manifest.get('fingerprint')}, but "
                        f"checkpoint {path} was trained on bank {fingerprint}; refusing to evaluate on it")
    result = evaluate(predictor(model, device=device), bank, split=split, max_rows=max_rows, seed=seed,
                      train_concepts=data.get("train_concepts"), n_boot=n_boot)
    result["checkpoint"] = files.to_jsonable({"path": str(path), "bank_fingerprint": fingerprint,
                                              "spec": info.get("spec")})
    return result


def _eval(args, parser) -> int:
    from . import files
    from .evaluation import format_table
    # a destination that cannot be written fails now, not after the whole evaluation; a failure on bad input
    # takes back the folder that check created
    with files.undone_on_bad_input(Path(args.json).parent) if args.json else contextlib.nullcontext():
        if args.json:
            files.check_writable(Path(args.json).parent, what=f"--json {args.json}: its folder")
            if Path(args.json).is_dir():
                raise InputError(f"--json {args.json}: is a folder; give a file name")
        result = evaluate_checkpoint(args.checkpoint, split=args.split, max_rows=args.max_rows, seed=args.seed,
                                     device=args.device)
    if args.json:  # written before printing, so a closed stdout cannot lose the result
        files.write_json(args.json, files.to_jsonable(result))
    print(format_table(result))
    return 0


def _report(args, parser) -> int:
    from .report import ReportFailed, build_index, run_report
    if args.index and (args.notebook or args.params):
        parser.error("lvm report --index takes no notebook or --params")
    if args.index:
        print(build_index(args.outputs))
        return 0
    if not args.notebook:
        parser.error("lvm report needs a NOTEBOOK (or --index)")
    try:
        run_dir = run_report(args.notebook, args.params, outputs_root=args.outputs, execution_timeout=args.timeout)
    except ReportFailed as exc:   # the notebook itself failed: its report is written, marked failed
        print(f"lvm report: FAILED: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    print(run_dir / "report.html")
    return 0


def _bench(args, parser) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / f"bench_{args.name}.py"
    if not script.is_file():
        raise InputError(f"{script}: no such benchmark script (benchmarks/ ships with the repository, not the package)")
    sys.argv = [str(script), *args.args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


COMMANDS = {"data": _data, "train": _train, "eval": _eval, "report": _report, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)      # usage errors: argparse prints them and exits 2
    args.argv = argv
    try:
        return COMMANDS[args.command](args, parser) or 0
    except InputError as e:
        print(f"lvm {args.command}: error: {e}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
