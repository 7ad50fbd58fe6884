"""The ``conceal`` command line: data info, train, apply, encode, audit, erase, export, bench, demo.

Every user-facing failure (bad path, bad label, bad config, unreadable model, a bad argument, a full
disk, a closed pipe) ends in one line ``conceal: error: ...`` and exit status 2, never a traceback from
deep inside. Parsing imports no torch: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import sys
import typing
from pathlib import Path

import numpy as np
import tomli_w

from . import __version__
from .config import ConfigError, DataConfig, TrainConfig, build_run_config
from .data import DataError, LabelError, dataset_class, dataset_names, dataset_options, open_configured, open_dataset
from .data.images import ImageReadError
from .data.schema import parse_attributes as _parse_attributes  # the --as parser (the service parses it alike)
from .errors import CheckpointError, ExportError

USER_ERRORS = (DataError, LabelError, ConfigError, ImageReadError, CheckpointError, ExportError)


# --- conceal data info --------------------------------------------------------------------------


def cmd_data_info(args) -> int:
    from .data.info import dataset_info, format_info

    options = {name: getattr(args, name) for name in dataset_class(args.dataset).cli_options if getattr(args, name) is not None}
    options = dataset_options({"dataset": args.dataset, "options": options})  # checked like a config's
    info = dataset_info(open_dataset(args.dataset, args.root, **dataclasses.asdict(options)))
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


# --- conceal train ------------------------------------------------------------------------------


# train flag -> the config key it sets (flags and --set go through the same checks)
TRAIN_FLAGS = {"dataset": "data.dataset", "root": "data.root", "size": "data.size", "epochs": "train.epochs",
               "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed", "device": "train.device",
               "max_minutes": "train.max_minutes"}  # and each method's own options (Method.cli_options): model.FIELD


def cmd_train(args) -> int:
    from .methods import method_class
    from .train import train

    cls = method_class(args.method)
    overrides = list(args.set or [])
    flags = TRAIN_FLAGS | {field: f"model.{field}" for field in cls.cli_options}
    for flag, key in flags.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={tomli_w.dumps({'v': value})[4:].strip()}")  # TOML, so nan and inf stay numbers
    config_path = args.config
    if args.resume and config_path is None and (Path(args.out) / "config.toml").is_file():
        config_path = Path(args.out) / "config.toml"  # resume with the run's own resolved config
    cfg = build_run_config(args.method, config_path, overrides, cls.Config, dataset_options)
    if args.no_progress:
        cfg.train.progress = False
    state = train(cfg, args.out, resume=args.resume, init_from=args.init_from, force=args.force)
    written = [name for name in ("checkpoint/", "config.toml", "loss_curves.png") if (Path(args.out) / name).exists()]
    if state.get("rank", 0) == 0:  # under torchrun, rank 0 speaks for all
        print(f"run directory: {args.out} ({', '.join(written)})")
    return 130 if state.get("stopped") == "interrupted" else 0


# --- conceal apply / encode ---------------------------------------------------------------------


def _crop_fraction(text: str) -> float:
    """--crop: a fraction of the shorter side in (0, 1], refused at parse time (a worker thread would fail later)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}") from None
    if not 0 < value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (a fraction of the shorter side), not {text}")
    return value


def _skip_summary(skipped: dict[str, str]) -> str:
    if not skipped:
        return ""
    reasons: dict[str, int] = {}
    for r in skipped.values():
        reasons[r] = reasons.get(r, 0) + 1
    return f", {len(skipped)} skipped (" + "; ".join(f"{n} {r}" for r, n in reasons.items()) + ")"


def cmd_apply(args) -> int:
    from .apply import ApplyOptions, run_apply
    from .methods import load_api

    options = ApplyOptions(as_=_parse_attributes(args.as_) if args.as_ is not None else None, detect=not args.no_detect,
                           min_face=args.min_face, max_faces=args.max_faces, on_no_face=args.on_no_face,
                           side_by_side=args.side_by_side, save_mask=args.save_mask, crop=args.crop, upscale=args.upscale,
                           colour_match=args.colour_match)
    run = dict(names=args.names, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet and sys.stderr.isatty())
    if args.engine != "ray" and (args.address is not None or args.actors is not None):
        raise ConfigError(f"{'--address' if args.address is not None else '--actors'} is for --engine ray")
    if args.engine == "ray":  # the same per-photo code and bytes on a Ray Data actor pool
        from .ray_apply import run_apply_ray

        summary = run_apply_ray(args.model, args.inputs, Path(args.out), options, address=args.address, actors=args.actors, **run)
    else:
        # Inference only (never trained or saved here), on the method's fastest backend (onnxruntime where installed and faster).
        summary = run_apply(load_api(args.model, fold_batch_norm=True, backend="auto"), args.inputs, Path(args.out), options, **run)
    print(summary.line(options.on_no_face))
    return 0


def _refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Nothing is overwritten without asking: an existing output needs --overwrite; a folder is never replaced."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"-o {path} is a folder: give a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists: pass --overwrite to replace it")


def cmd_encode(args) -> int:
    from .apply import plural
    from .codes import encode_photos
    from .methods import load_api

    _refuse_existing(args.out, args.overwrite)
    model = load_api(args.model, fold_batch_norm=True)  # inference only: never trained or saved here
    if "codes" not in model.method.releases:
        raise ConfigError(f"a {model.method.name} model releases images, not codes: use conceal apply")
    if not args.no_detect:
        from .faces.detect import default_detector

        default_detector()  # a missing detector fails now, in one line
    arrays, skipped, no_face = encode_photos(model, args.inputs, detect=not args.no_detect, min_face=args.min_face,
                                             max_faces=args.max_faces, crop=args.crop)
    if not arrays:
        raise DataError(("no face found in " + plural(len(no_face), "photo") if no_face else "no readable images among the inputs")
                        + _skip_summary(skipped))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name[:32]}.{os.getpid()}.tmp.npz")  # short: a long output name still fits
    try:
        np.savez(tmp, **arrays)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    photos = len(set(arrays["paths"].tolist()))
    missed = f", {plural(len(no_face), 'photo')} with no face found ({', '.join(no_face[:5])})" if no_face else ""
    print(f"wrote {plural(len(arrays['codes']), 'code')} of size {arrays['codes'].shape[1]} from {plural(photos, 'photo')} "
          f"to {out}{missed}{_skip_summary(skipped)}")
    return 0


def cmd_decode(args) -> int:
    from .codes import run_decode
    from .methods import load_api

    model = load_api(args.model, fold_batch_norm=True)
    as_ = _parse_attributes(args.as_) if args.as_ is not None else None
    print(run_decode(model, Path(args.codes), Path(args.out), as_=as_, labels=Path(args.labels) if args.labels else None,
                     into=args.into, overwrite=args.overwrite))
    return 0


# --- conceal erase ------------------------------------------------------------------------------


def cmd_erase(args) -> int:
    from .methods import load_api
    from .methods.erasure import fit_code_eraser
    from .modelfile import model_dir, read_model_info, write_model_files

    if args.covariance_rank < 0:
        raise ConfigError(f"--covariance-rank must be 0 or more, not {args.covariance_rank}")
    source = model_dir(args.model)
    info = read_model_info(source)
    method = load_api(source).method  # not folded: its state_dict is saved below
    if "codes" not in method.releases:
        raise ConfigError(f"a {method.name} model releases images, not codes: there are no codes to erase")
    # The training run's own resolved config, so the written config.toml still says how it was trained.
    run_cfg = build_run_config(info["method"], source / "config.toml", [], type(method.cfg), dataset_options)
    d = run_cfg.data
    dataset = args.dataset or d.dataset
    opened = open_configured(d, args.root) if dataset == d.dataset else open_dataset(dataset, args.root)
    train = opened.arrays(size=method.image_size, crop=d.crop).subset("train")
    missing = set(method.concealed.names) - set(train.labels)
    if missing:
        raise DataError(f"{dataset} has no {', '.join(sorted(missing))} label to fit the eraser on")
    fitted = fit_code_eraser(method, train.images, train.labels, covariance_rank=args.covariance_rank)
    run_cfg.model = method.cfg
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kept = {k: info[k] for k in ("epoch", "step", "metrics") if k in info}
    write_model_files(out, method, run_cfg, {**kept, "code_eraser": {**fitted, "dataset": dataset, "split": "train"}})
    print(f"fitted a rank-{fitted['rank']} {fitted['method']} eraser of {', '.join(fitted['labels'])} on {fitted['fitted_on_codes']} training codes; model written to {out}")
    return 0


# --- conceal demo -------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from .demo import run_demo

    path = run_demo(args.model, args.out)
    print(f"demo grid: {path}")
    return 0


# --- conceal audit ------------------------------------------------------------------------------


def cmd_audit(args) -> int:
    from .audit import run_audit

    public_options = None
    if args.embed_sample is not None:
        try:
            sizes = [int(v) for v in args.embed_sample.split(",")]
        except ValueError:
            sizes = []
        if len(sizes) != 3 or min(sizes) < 2:
            raise DataError(f"--embed-sample takes TRAIN,VAL,TEST face counts of at least 2, not {args.embed_sample!r}")
        public_options = dict(zip(("embed_train", "embed_val", "embed_test"), sizes))
    report = run_audit(args.model, dataset=args.dataset, root=args.root, out=args.out, max_images=args.max_images, seed=args.seed,
                       threat_model=args.threat_model, max_train=args.max_train, reuse_test_halves=args.reuse_test_halves,
                       public_options=public_options, command=args.command_words)
    print(f"report: {report}")
    return 0


# --- conceal export / bench -----------------------------------------------------------------------


def cmd_export(args) -> int:
    from .export import describe_inputs, export_onnx, max_difference, onnx_session, output_names
    from .methods import load_model

    _refuse_existing(args.out, args.overwrite)
    method = load_model(args.model)
    path = export_onnx(method, args.out)
    print(f"wrote {path}: the {method.name} release graph (batch axis N is dynamic)")
    for name, what in describe_inputs(method).items():
        print(f"  input {name}: {what}")
    print(f"  outputs: {', '.join(output_names(method))} (float32; released images (N, 3, S, S) in [0, 1])")
    if not args.no_check:
        print(f"  onnxruntime vs torch on random inputs: max |difference| {max_difference(method, onnx_session(path)):.2g}")
    return 0


def cmd_bench(args) -> int:
    from .bench import BenchConfig, run_benchmarks
    from .methods.registry import method_names
    from .modelfile import model_dir

    # no flag: the concealer; --profile alone: every method; --profile NAME ...: those; --no-profile: none
    profile = [] if args.no_profile else ["concealer"] if args.profile is None else list(dict.fromkeys(args.profile or method_names()))
    command = ("conceal bench" + (f" --models {' '.join(args.models)}" if args.models else "") + (" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (" --no-profile" if args.no_profile else " --profile" + "".join(f" {m}" for m in args.profile) if args.profile is not None else "")
               + (f" --photos {args.photos}" if args.photos is not None else "") + (" --photos-only" if args.photos_only else ""))
    if args.photos is not None and args.photos < 0:
        raise ConfigError(f"--photos must be 0 or more, not {args.photos}")
    if args.photos_only and args.photos == 0:
        raise ConfigError("--photos-only needs photos: --photos N with N > 0")
    cfg = BenchConfig(models=list(args.models or []), quick=args.quick, threads=args.threads, profile=profile,
                      command=command + f" -o {args.out}", photos=args.photos, photos_only=args.photos_only)
    for m in cfg.models:
        model_dir(m)  # a bad path fails now, not after minutes of measuring
    report = run_benchmarks(cfg, cli_main=main)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    print(f"wrote {out}")
    return 0


# --- conceal serve -------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    try:
        from .service import Limits, serve
    except ImportError as e:
        raise ConfigError(f"conceal serve needs the serve extra ({e.name} is missing): pip install 'conceal[serve]'") from None
    serve(args.models, host=args.host, port=args.port,
          limits=Limits(workers=args.workers, queue=args.queue, max_upload_bytes=round(args.max_upload_mb * 2**20)))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: ``conceal: error: ...`` (exit status 2), then where the help is."""

    def error(self, message: str):
        self.exit(2, f"conceal: error: {message} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help says it already (or there is none to say)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or action.required or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _config_help(text: str, key: str) -> str:
    """Help of a train flag that sets config ``key``: what it does, and the default when no config sets it."""
    section, name = key.split(".")
    default = getattr({"data": DataConfig, "train": TrainConfig}[section], name)
    return f"{text} (sets {key}; default: the config's, else {'none' if default is None else default})"


def _model_data_arguments(parser: argparse.ArgumentParser, model: str, dataset: str, out: str) -> None:
    """The arguments of a command that reads a model and a split of a dataset (by default its training one)."""
    parser.add_argument("model", help=model)
    parser.add_argument("--dataset", choices=dataset_names(), help=f"{dataset} (default: the model's training dataset)")
    parser.add_argument("--root", help="dataset folder (default: the model's, when --dataset is its training dataset)")
    parser.add_argument("-o", "--out", required=True, help=out)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``conceal train METHOD`` that every method shares."""
    parser.add_argument("-o", "--out", required=True, help="run directory (config.toml, checkpoint/, loss_curves.png)")
    parser.add_argument("--config", help="TOML config file (see configs/; default: the built-in defaults, or the run's own "
                        "config.toml with --resume)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. model.kl_weight=2 "
                        "(repeatable; default: none)")
    parser.add_argument("--dataset", choices=dataset_names(), help=_config_help("training data", "data.dataset"))
    parser.add_argument("--root", help=_config_help("dataset folder (not needed for synthetic)", "data.root"))
    parser.add_argument("--size", type=int, help=_config_help("image side in pixels, at least 8", "data.size"))
    parser.add_argument("--epochs", type=int, help=_config_help("epochs to train in all (with --resume: the new total)", "train.epochs"))
    parser.add_argument("--batch-size", type=int, help=_config_help("images per batch", "train.batch_size"))
    parser.add_argument("--lr", type=float, help=_config_help("learning rate", "train.lr"))
    parser.add_argument("--seed", type=int, help=_config_help("seed of the weights' initialisation and of the batch order: "
                        "the same config and seed give the same weights on CPU", "train.seed"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help=_config_help("auto: CUDA when torch sees it", "train.device"))
    parser.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this much training time in this "
                        "invocation; not kept for --resume (default: no limit)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--force", action="store_true", help="replace the run already in --out (its checkpoint, config.toml "
                        "and loss curves) instead of refusing")
    parser.add_argument("--init-from", metavar="MODEL", help="start from this model's weights (use its config.toml as --config; "
                        "default: fresh weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=cmd_train)


def add_method_options(parser: argparse.ArgumentParser, name: str) -> None:
    """The options method ``name`` declares (``Method.cli_options``: config field -> help), each setting model.FIELD."""
    import dataclasses
    import typing

    from .methods import method_class

    cls = method_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    hints = typing.get_type_hints(cls.Config)
    for field, text in cls.cli_options.items():
        kind = hints[field] if hints[field] in (int, float) else str  # other types: read as TOML by the config
        default = fields[field].default
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, type=kind, metavar=field.upper(),
                            help=f"{text} (sets model.{field}; default: the config's, else {default})")


class MethodParsers(argparse._SubParsersAction):
    """``conceal train METHOD``: the method's own options join its parser only once it is chosen, so listing the
    methods (``conceal train --help``) and argument errors import no torch; choosing one imports its module."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = self._name_parser_map.get(values[0])
        if chosen is not None and not getattr(chosen, "method_options_added", False):
            add_method_options(chosen, values[0])
            chosen.method_options_added = True
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    from .methods.registry import method_names

    p = OneLineParser(prog="conceal", description="Remove sensitive information from face images, and measure what leaks.",
                      formatter_class=DefaultsFormatter)
    p.add_argument("--version", action="version", version=f"conceal {__version__}")
    subparser = functools.partial(OneLineParser, formatter_class=DefaultsFormatter)  # one-line errors, defaults in every --help
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=subparser)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True, metavar="COMMAND",
                                                                        parser_class=subparser)
    info = data.add_parser("info", help="counts per split, label distributions, identities, skipped files")
    info.add_argument("--dataset", choices=dataset_names(), required=True, help="which dataset to describe")
    info.add_argument("--root", help="dataset folder (default: none; needed for every dataset but synthetic)")
    for name in dataset_names():  # each dataset's own options (FaceDataset.cli_options), e.g. synthetic's --n
        options = {f.name: f for f in dataclasses.fields(dataset_class(name).Options)}
        for option, text in dataset_class(name).cli_options.items():
            kind = typing.get_type_hints(dataset_class(name).Options)[option]
            info.add_argument(f"--{option.replace('_', '-')}", type=kind if kind in (int, float) else str,
                              choices=options[option].metadata.get("choices"),
                              help=f"{name} only: {text} (default: {options[option].default})")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_data_info)

    tr = sub.add_parser("train", help="train a method (one loop for all; checkpoints every epoch; --resume)")
    methods = tr.add_subparsers(dest="method", required=True, metavar="METHOD", action=MethodParsers,
                                help=f"what to train: {', '.join(method_names())}")
    for name in method_names():
        _train_arguments(methods.add_parser(name, help=f"train a {name} (conceal train {name} --help: its options)"))

    crop_help = ("fraction of the shorter side kept by the centre crop (default: the model's training crop, "
                 "e.g. 1.0 for UTKFace's aligned faces, 0.5 for LFW's photos)")
    ap = sub.add_parser(
        "apply",
        help="conceal every face in photos (or re-render face crops with --no-detect)",
        description="Finds every face in each photo, aligns it to the model's training crop, conceals it and pastes it "
        "back: outputs are PNGs at the photo's size and orientation, bit-identical outside the faces, with no metadata "
        "(no EXIF, no GPS). Outputs mirror the input folders under -o, with OUT/manifest.jsonl listing every input, its "
        "output, status and faces. Inputs and existing files are never overwritten (--overwrite to replace outputs).",
    )
    ap.add_argument("model", help="a model directory (models/NAME) or a run directory")
    ap.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    ap.add_argument("-o", "--out", required=True, help="output folder (not inside an input folder)")
    ap.add_argument("--as", dest="as_", metavar="ATTRS", help="concealer: e.g. gender=female,age=40 (default: none, every attribute unspecified)")
    ap.add_argument("--no-detect", action="store_true", help="the inputs are face crops: centre-crop each to the model's "
                    "size, as the model was trained (outputs at the model's size)")
    ap.add_argument("--min-face", type=float, default=24, metavar="PX", help="ignore faces smaller than this (default: 24 px)")
    ap.add_argument("--max-faces", type=int, default=None, metavar="N", help="conceal at most the N largest faces per photo (default: all)")
    ap.add_argument("--on-no-face", choices=("copy", "skip"), default="copy",
                    help="a photo where no face was found: copy it unchanged, or write nothing (default: copy; "
                    "either way it is counted and named in the summary)")
    ap.add_argument("--side-by-side", action="store_true", help="also write NAME_before_after.png, the input beside its output")
    ap.add_argument("--colour-match", choices=("auto", "on", "off"), default="auto", help="shift each drawn face's mean "
                    "colour to the photo's face it replaces, for its lighting and colour cast: on for the concealer and "
                    "the anonymizer, off for neither; auto (default): the anonymizer only (the concealer's face keeps "
                    "its rendered skin tone, which it conceals)")
    ap.add_argument("--names", choices=("keep", "index"), default="keep",
                    help="output names: keep the inputs' relative paths, or index 000001.png ... (the mapping only in "
                    "the manifest; use it when names carry labels) (default: keep)")
    ap.add_argument("--overwrite", action="store_true", help="replace outputs (and a manifest) that already exist in -o")
    ap.add_argument("--resume", action="store_true", help="continue a run into the same -o: skip inputs its manifest lists")
    ap.add_argument("--upscale", action="store_true", help="--no-detect: resize outputs to the input crop's size")
    ap.add_argument("--save-mask", action="store_true", help="masker: also write each released mask as NAME_mask.png")
    ap.add_argument("--crop", type=_crop_fraction, default=None, help="--no-detect: " + crop_help)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process; ray: a Ray Data "
                    "actor pool, the same outputs byte for byte (needs pip install 'conceal[ray]') (default: local)")
    ap.add_argument("--address", default=None, help="--engine ray: join this Ray cluster (auto or HOST:PORT; its workers must "
                    "see the inputs, the model and -o at the same paths) (default: start a local Ray)")
    ap.add_argument("--actors", type=int, default=None, metavar="N", help="--engine ray: actors, each loading the model once "
                    "(default: one per CPU)")
    ap.set_defaults(func=cmd_apply)

    en = sub.add_parser("encode", help="export concealed codes of every face in photos (npz: codes N x d, paths, boxes, landmarks)")
    en.add_argument("model", help="a model directory (models/NAME) or a run directory, of a method that releases codes")
    en.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    en.add_argument("-o", "--out", required=True, help="output .npz (paths are stored as given, never absolute)")
    en.add_argument("--crop", type=_crop_fraction, default=None, help="--no-detect: " + crop_help)
    en.add_argument("--no-detect", action="store_true", help="the inputs are face crops: one code per image, of its centre crop")
    en.add_argument("--min-face", type=float, default=24, metavar="PX", help="ignore faces smaller than this (default: 24 px)")
    en.add_argument("--max-faces", type=int, default=None, metavar="N", help="encode at most the N largest faces per photo (default: all)")
    en.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    en.set_defaults(func=cmd_encode)

    dc = sub.add_parser("decode", help="render shared concealed codes (share-then-reveal): with chosen attributes, "
                        "each face's own (--labels), or pasted back into its photo (--into)")
    dc.add_argument("model", help="the concealer model the codes were encoded with (models/NAME or a run directory)")
    dc.add_argument("codes", help="codes.npz from conceal encode")
    dc.add_argument("-o", "--out", required=True, help="output folder: 000001.png ... per codes row, or with --into the photos")
    dc.add_argument("--as", dest="as_", metavar="ATTRS", help="e.g. gender=female,age=40 for every face (default: none, "
                    "every attribute unspecified; with --labels: overrides the CSV's values)")
    dc.add_argument("--labels", metavar="CSV", help="path,<attribute columns> (e.g. path,gender,age): each face rendered with "
                    "its photo's row (the paths as codes.npz stores them) (default: none)")
    dc.add_argument("--into", nargs="+", type=Path, metavar="PHOTOS", help="the photos the codes were encoded from (files or "
                    "folders): each decoded face is pasted back where it was found (default: none: faces alone at the model's size)")
    dc.add_argument("--overwrite", action="store_true", help="replace outputs that already exist in -o (default: refuse)")
    dc.set_defaults(func=cmd_decode)

    au = sub.add_parser("audit", help="attack what a model releases with fresh attackers and offline judges")
    _model_data_arguments(au, "a model directory (models/NAME) or a run directory", "whose test split to attack",
                          "report directory (report.md, report.json, figures)")
    au.add_argument("--max-images", type=int, default=None, help="audit a seeded sample of the test split (default: all of it)")
    au.add_argument("--threat-model", choices=("public-model", "test-halves", "all"), default="all",
                    help="public-model: attackers trained on the train split's releases (the headline); test-halves: on half "
                         "the test split (data-poor, for comparison); all (default)")
    au.add_argument("--max-train", type=int, default=None, help="public-model: a seeded sample of the train split (quick looks; default: all of it)")
    au.add_argument("--embed-sample", metavar="TRAIN,VAL,TEST", default=None,
                    help="public-model: how many train, val and test faces the face-embedding attackers read (the judge costs "
                         "~85 ms an image on an idle core, 0.57 s at load 5; default: 2000,300,1500)")
    au.add_argument("--reuse-test-halves", metavar="REPORT_JSON", default=None,
                    help="carry the test-halves sections over from an earlier report.json of the same model, test faces and seed (default: recompute them)")
    au.add_argument("--seed", type=int, default=0, help="seed of the sample, the attackers and their splits")
    au.set_defaults(func=cmd_audit)

    er = sub.add_parser("erase", help="fit a post-hoc eraser of the concealed labels on a model's training codes (concealer, anonymizer)")
    _model_data_arguments(er, "a concealer or anonymizer model directory (models/NAME) or run directory", "whose train split to fit on",
                          "output model directory (the input model is left as it is)")
    er.add_argument("--covariance-rank", type=int, default=0, metavar="R",
                    help="also flatten the R directions where label groups' spreads differ most (against non-linear attackers)")
    er.set_defaults(func=cmd_erase)

    ex = sub.add_parser("export", help="export a model's release (what apply computes) to ONNX")
    ex.add_argument("model", help="a model directory (models/NAME) or a run directory")
    ex.add_argument("-o", "--out", required=True, help="output .onnx file")
    ex.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check on random inputs")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser("bench", help="measure inference, apply, training and memory; write a markdown report")
    be.add_argument("--models", nargs="+", metavar="MODEL", help="model directories (default: every models/*/ with a model.json, "
                    "else a fresh default-config model of each method)")
    be.add_argument("--quick", action="store_true", help="tiny counts: a smoke test in seconds, not numbers to quote")
    be.add_argument("--threads", type=int, help="torch and onnxruntime intra-op threads, of the matmul peak and every "
                    "model measurement alike (default: torch's)")
    profiled = be.add_mutually_exclusive_group()
    profiled.add_argument("--profile", nargs="*", metavar="METHOD", choices=method_names(),
                          help="profile the batch inference (torch.profiler, each torch backend) of these methods' "
                               f"models ({', '.join(method_names())}; none named: every one), for the report's top ops by "
                               "self CPU time (default: the concealer's)")
    profiled.add_argument("--no-profile", action="store_true", help="skip the profile section")
    be.add_argument("--photos", type=int, default=None, metavar="N", help="generated photos (1-4 faces each) that conceal "
                    "apply and deface each process, back to back, for the photos/s ratio (default: 20, --quick 2; 0: skip)")
    be.add_argument("--photos-only", action="store_true", help="measure only the photo comparison (with --photos 200: the "
                    "photo issue's measurement)")
    be.add_argument("-o", "--out", default="benchmarks/RESULTS.md", help="report file (default: benchmarks/RESULTS.md)")
    be.set_defaults(func=cmd_bench)

    de = sub.add_parser("demo", help="conceal bundled sample faces with the shipped model; writes a PNG grid")
    de.add_argument("--model", default=None, help="default: models/concealer-utkface-128 where it exists, else models/concealer-utkface-64")
    de.add_argument("-o", "--out", default="out", help="output folder (default: out/)")
    de.set_defaults(func=cmd_demo)

    se = sub.add_parser("serve", help="an HTTP API (/docs) and a web page (/) to conceal photos",
                        description="Loads the models once, then serves POST /v1/apply, GET /v1/models, GET /health and the page.")
    se.add_argument("models", nargs="*", metavar="MODEL", help="model directories (default: the headline model of each method in models/)")
    se.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    se.add_argument("--port", type=int, default=8000, help="port to listen on")
    se.add_argument("--workers", type=int, default=4, help="photos concealed at once; their faces share model calls (default: 4)")
    se.add_argument("--queue", type=int, default=4, help="requests waiting for a worker before 503 (default: 4)")
    se.add_argument("--max-upload-mb", type=float, default=20, help="largest upload in MiB (default: 20)")
    se.set_defaults(func=cmd_serve)
    return p


def describe_os_error(error: OSError) -> str:
    """An OSError as one line naming the file: "no space left on device writing out/a.png"."""
    import errno

    where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
    what = {errno.ENOSPC: "no space left on device", errno.ENAMETOOLONG: "file name too long"}.get(
        error.errno, (error.strerror or str(error) or type(error).__name__).lower())
    return f"{what}: {where}" if where else what


def main(argv: list[str] | None = None) -> int:
    from safetensors import SafetensorError

    args = build_parser().parse_args(argv)
    # The words as typed, for reports' provenance: sys.argv[0] is a path that says nothing (`-m` gives __main__.py).
    args.command_words = "conceal " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        message = str(e)
    except BrokenPipeError:
        # `conceal ... | head` closed our stdout: say so once, on stderr, and keep Python from
        # failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        message = "output closed early (broken pipe)"
    except OSError as e:  # a full disk, a name too long, a permission: the system's words, one line
        message = describe_os_error(e)
    except SafetensorError as e:
        message = f"unreadable weights file: {e}"
    except KeyboardInterrupt:
        print("conceal: interrupted", file=sys.stderr)
        return 130
    print(f"conceal: error: {' '.join(message.split())}", file=sys.stderr)  # one line, however the message is spelled
    return 2


if __name__ == "__main__":
    sys.exit(main())
