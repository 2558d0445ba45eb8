"""The `lvm` command: data build/card, train, eval, report. Each subcommand lives in its module."""
from __future__ import annotations

import argparse
import sys


def data_main(argv: list[str]) -> int:
    from .data import DEFAULT_BANK, DEFAULT_MAX_ARTICLES, BuildConfig, ChunkerConfig, build_bank, dataset_card, \
        format_card, load_bank
    from .data.encode import DEFAULT_ENCODER
    p = argparse.ArgumentParser(prog="lvm data", description="Build or describe a concept bank.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="corpus -> concepts -> vectors -> bank folder (resumable)")
    b.add_argument("--corpus", help="JSON lines of articles, plain or .gz (default: $LVM_CORPUS or "
                                    "../shared/corpora/enwiki-2015-25k.jsonl.gz)")
    b.add_argument("--out", default=DEFAULT_BANK, help=f"bank folder (default {DEFAULT_BANK})")
    b.add_argument("--max-articles", type=int, default=DEFAULT_MAX_ARTICLES,
                   help=f"first N articles (default {DEFAULT_MAX_ARTICLES}; 0 = all)")
    b.add_argument("--encoder", default=DEFAULT_ENCODER, help="sentence-transformers name or path")
    b.add_argument("--device", default=None, help="encoder device (default: auto)")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--target-words", type=int, default=60)
    b.add_argument("--min-words", type=int, default=10)
    b.add_argument("--max-words", type=int, default=400)
    b.add_argument("--val-fraction", type=float, default=0.1)
    b.add_argument("--ood-fraction", type=float, default=0.1)
    b.add_argument("--split-seed", type=int, default=0)
    b.add_argument("--shard-size", type=int, default=2048)
    b.add_argument("--skip-bad", action="store_true", help="skip and count malformed corpus lines")
    b.add_argument("--force", action="store_true", help="replace an existing bank built with other settings")
    b.add_argument("--params", help="YAML mapping of any of these options (e.g. corpus: PATH, max_articles: 0); "
                                    "flags given on the command line win")
    c = sub.add_parser("card", help="print the dataset card of a bank")
    c.add_argument("bank", nargs="?", default=DEFAULT_BANK)
    args = p.parse_args(argv)
    if args.cmd == "build" and args.params:
        b.set_defaults(**_typed(b, _build_params(args.params, vars(args)), args.params))
        args = p.parse_args(argv)            # command-line flags override the file
    if args.cmd == "card":
        print(format_card(dataset_card(load_bank(args.bank))))
        return 0
    cfg = BuildConfig(corpus=args.corpus, max_articles=args.max_articles or None, skip_bad=args.skip_bad,
                      encoder=args.encoder, encode_batch_size=args.batch_size, device=args.device,
                      chunker=ChunkerConfig(args.target_words, args.min_words, args.max_words),
                      val_fraction=args.val_fraction, ood_fraction=args.ood_fraction,
                      split_seed=args.split_seed, shard_size=args.shard_size)
    if args.force:
        _remove_bank(args.out)
    bank = build_bank(args.out, cfg)
    print(format_card(dataset_card(bank)))
    return 0


def _remove_bank(folder: str) -> None:
    """--force: delete an existing bank, and only a bank (a folder with an lvm-bank manifest)."""
    import json
    import shutil
    from pathlib import Path
    from .data import BankError
    manifest = Path(folder) / "manifest.json"
    if not manifest.exists():
        return
    try:
        is_bank = json.loads(manifest.read_text()).get("format") == "lvm-bank/1"
    except (json.JSONDecodeError, AttributeError):
        is_bank = False
    if not is_bank:
        raise BankError(f"--force refuses to delete {folder}: its manifest.json is not an lvm bank's")
    shutil.rmtree(folder)


def _build_params(path: str, known: dict) -> dict:
    """Options for `lvm data build` from a YAML file; an unknown key is an error naming file and key."""
    import yaml
    from .data import BankError
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BankError(f"{path}: cannot read build params ({e})") from None
    if not isinstance(values, dict):
        raise BankError(f"{path}: build params must be a mapping of option: value")
    options = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(options) - (set(known) - {"cmd", "params"}))
    if unknown:
        raise BankError(f"{path}: unknown build option(s) {unknown}; expected some of "
                        f"{sorted(set(known) - {'cmd', 'params'})}")
    return options


def _typed(parser: argparse.ArgumentParser, options: dict, path: str) -> dict:
    """Convert file values with each option's own argparse type, so they are checked like flags."""
    from .data import BankError
    types = {a.dest: a.type for a in parser._actions if a.type is not None}
    out = {}
    for key, value in options.items():
        try:
            out[key] = types[key](value) if key in types and value is not None else value
        except (TypeError, ValueError):
            raise BankError(f"{path}: {key}: {value!r} is not a valid {types[key].__name__}") from None
    return out


def _lazy(module: str):
    def run(argv: list[str]) -> int:
        import importlib
        return importlib.import_module(f"lvmlib.{module}").cli_main(argv)
    return run


COMMANDS = {"data": data_main, "train": _lazy("train"), "eval": _lazy("metrics"), "report": _lazy("report")}


def main(argv: list[str] | None = None) -> int:
    from .data import BankError, CorpusError
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: lvm {data build|data card|train|eval|report} ...  (lvm COMMAND --help for more)",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:]) or 0
    except (BankError, CorpusError) as e:
        print(f"lvm {argv[0]}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
