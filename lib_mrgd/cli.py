"""``python -m lib_mrgd``: the standalone command line.

Exit codes: 0 success; 2 a bad spec or argument (one line ``error: <field path>: <reason>``);
1 any other failure (model missing, out of memory), also one line. Set ``MRGD_DEBUG=1`` to see
the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from .errors import ArgumentError, ModelError, MrgdError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PNG_SPEC_KEY = "mrgd"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        name, _, reason = message.removeprefix("argument ").partition(": ")
        raise ArgumentError(name, reason) if reason else ArgumentError("", name)


def _parser() -> argparse.ArgumentParser:
    from . import METHODS
    from .backends.loaders import DEFAULT_MODEL

    parser = _Parser(prog="python -m lib_mrgd", description="Multi-Region Guided Diffusion")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    edit = sub.add_parser("edit", help="generate the source and the edited target of a spec")
    edit.add_argument("spec", help="edit spec: a JSON file (or a JSON string)")
    edit.add_argument("--model", default=DEFAULT_MODEL,
                      help=f"'tiny', 'random-sd15' (full size, random weights: timing only), a diffusers folder, "
                           f"a .safetensors/.ckpt file or a hub id (default {DEFAULT_MODEL})")
    edit.add_argument("--out", required=True, help="output folder")
    edit.add_argument("--method", default="mrgd", choices=METHODS)
    edit.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    edit.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on cuda, else fp32)")
    edit.add_argument("--clipseg", default=None,
                      help="CLIPSeg weights for guidance: a folder or hub id (default CIDAS/clipseg-rd64-refined)")
    edit.add_argument("--taesd", default=None,
                      help="the tiny decoder of guidance_decoder tiny: a folder or hub id (default madebyollin/taesd)")
    edit.add_argument("--inversion", default=None, help="an inversion.safetensors from 'invert': edit that photo")
    edit.add_argument("--seed", type=int, default=None, help="override the spec's seed (-1 = random)")
    edit.add_argument("--steps", type=int, default=None, help="override the spec's steps")
    edit.add_argument("--quiet", action="store_true", help="no progress bar")

    inv = sub.add_parser("invert", help="invert a real photo for a spec's source side, then edit it")
    inv.add_argument("image", help="the photo (PNG, JPEG, WebP...)")
    inv.add_argument("spec", help="edit spec: a JSON file (or a JSON string)")
    inv.add_argument("--model", default=DEFAULT_MODEL, help="as for edit")
    inv.add_argument("--out", required=True, help="output folder")
    inv.add_argument("--method", default="mrgd", choices=METHODS)
    inv.add_argument("--device", default=None)
    inv.add_argument("--dtype", default=None)
    inv.add_argument("--clipseg", default=None, help="as for edit")
    inv.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="run and score a set of edit specs (CLIP, SSIM-e, SSIM-i) per method")
    ev.add_argument("set", help="a folder of edit specs (*.json), e.g. benchmarks/edits")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="as for edit")
    ev.add_argument("--methods", default="multidiffusion,p2p,mrgd",
                    help="comma-separated: multidiffusion, p2p, mrgd, mrgd-no-guidance, mrgd-no-total, mrgd-no-kssa, "
                         "mrgd-no-keywords")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--limit", type=int, default=None, help="only the first N edits of the set")
    ev.add_argument("--resume", action="store_true", help="skip (edit, method) rows already in DIR/metrics.csv")
    ev.add_argument("--shard", default=None, help="i/n: run every n-th edit starting at the i-th (1-based)")
    ev.add_argument("--clip", default=None,
                    help="CLIP weights: an open_clip ViT-B-16 tag (default openai) or a local file")
    ev.add_argument("--device", default=None)
    ev.add_argument("--dtype", default=None)
    ev.add_argument("--clipseg", default=None, help="as for edit")
    ev.add_argument("--taesd", default=None, help="as for edit")
    ev.add_argument("--ssim-e-margin", type=float, default=None,
                    help="SSIM-e band: each edited box dilated by this fraction of the shorter side (default 0.1)")
    ev.add_argument("--ssim-e-include-box", action="store_true",
                    help="SSIM-e over the dilated boxes whole, the edited boxes included (default: the band only)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    mg = sub.add_parser("eval-merge", help="merge eval shard folders into one table and report")
    mg.add_argument("shards", nargs="+", help="the --out folders of the shards")
    mg.add_argument("--set", required=True, help="the set the shards ran")
    mg.add_argument("--out", required=True, help="output folder")

    im = sub.add_parser("import", help="convert a Tiled Diffusion / MRGD-authors region file or infotext to a spec")
    im.add_argument("file", help="region JSON (bbox_controls), an infotext .txt, or a PNG with an infotext")
    im.add_argument("--out", required=True, help="the spec JSON to write")

    kw = sub.add_parser("keywords", help="print each region's keywords selected by attention entropy")
    kw.add_argument("spec", help="edit spec: a JSON file (or a JSON string)")
    kw.add_argument("--model", default=DEFAULT_MODEL, help="as for edit")
    kw.add_argument("--device", default=None)
    kw.add_argument("--dtype", default=None)
    kw.add_argument("--clipseg", default=None, help="as for edit (keywords follow the guided run)")
    kw.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kw.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load(args: argparse.Namespace):
    """The command's model; the tiny one says once what its images are."""
    from . import load_pipeline

    pipeline = load_pipeline(args.model, device=args.device, dtype=args.dtype, clipseg=args.clipseg,
                             taesd=getattr(args, "taesd", None))
    if pipeline.name.startswith(("tiny", "random-")):
        print(f"note: --model {pipeline.name} is a random model (tests, smoke runs, timing): its images are noise",
              file=sys.stderr)
    return pipeline


def _png_info(spec_json: str, image: str, method: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_SPEC_KEY, spec_json)
    info.add_text("mrgd-image", image)
    info.add_text("mrgd-method", method)
    return info


def cmd_edit(args: argparse.Namespace) -> int:
    from . import load_spec, run_edit
    from .method import check_method
    from .runner import check_sampler

    spec = load_spec(args.spec)
    overrides = {k: v for k, v in (("seed", args.seed), ("steps", args.steps)) if v is not None}
    if overrides:
        spec = spec.replace(**overrides)
    check_method(args.method)
    check_sampler(spec)
    out = _out_folder(args.out)
    inversion = None
    if args.inversion:
        from .inversion import Inversion

        inversion = Inversion.load(args.inversion)
    pipeline = _load(args)
    result = run_edit(spec, pipeline, method=args.method, progress=not args.quiet, inversion=inversion)
    _write_pair(out, result, args.method)
    timings = result.info["timings"]
    print(f"wrote {out / 'source.png'}, {out / 'target.png'}, {out / 'spec.json'} "
          f"(seed {result.spec.seed}, {timings['total_s']:.1f} s)")
    return EXIT_OK


def _out_folder(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ArgumentError("--out", f"{out} exists and is not a folder")
    return out


def _write_pair(out: Path, result, method: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spec_json = result.spec.to_json()
    result.source.save(out / "source.png", pnginfo=_png_info(spec_json, "source", method))
    result.target.save(out / "target.png", pnginfo=_png_info(spec_json, "target", method))
    result.spec.save(out / "spec.json")


def cmd_invert(args: argparse.Namespace) -> int:
    """Everything is computed before anything is written: a failure leaves --out untouched."""
    import time

    from . import load_spec, run_edit
    from .images import prepare
    from .inversion import image_scores, invert, latent_psnr, reconstruct
    from .method import check_method
    from .runner import check_sampler

    started = time.perf_counter()
    spec = load_spec(args.spec).resolved()
    check_method(args.method)
    check_sampler(spec)
    out = _out_folder(args.out)
    photo, _ = prepare(args.image, spec.width, spec.height)  # bad images fail here, before any model work
    pipeline = _load(args)
    inversion = invert(photo, spec, pipeline, method=args.method, progress=not args.quiet)
    z0 = pipeline.encode_image(photo)
    t0 = time.perf_counter()
    plain = reconstruct(inversion, spec, pipeline, null_text=False)
    tuned = reconstruct(inversion, spec, pipeline, null_text=True)
    reconstruct_s = time.perf_counter() - t0
    plain_image, tuned_image = pipeline.decode(plain)[0], pipeline.decode(tuned)[0]
    result = run_edit(spec, pipeline, method=args.method, progress=not args.quiet, inversion=inversion)
    report = {
        "image": str(args.image), "model": pipeline.name, "method": args.method, "cfg_scale": spec.cfg_scale,
        "steps": spec.steps, "notes": inversion.report["notes"],
        "ddim_inversion": {**image_scores(photo, plain_image), "latent_psnr": latent_psnr(z0, plain)},
        "null_text_inversion": {**image_scores(photo, tuned_image), "latent_psnr": latent_psnr(z0, tuned)},
        "vae_round_trip": image_scores(photo, pipeline.decode(z0)[0]),
        "null_text_inner_steps": inversion.report["inner_steps"],
        "timings": {**inversion.report["timings"], "reconstruct_s": reconstruct_s,
                    "edit_s": result.info["timings"]["total_s"], "total_s": time.perf_counter() - started},
    }
    _write_pair(out, result, args.method)
    tuned_image.save(out / "reconstruction.png")
    inversion.save(out / "inversion.safetensors")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}: reconstruction PSNR {report['null_text_inversion']['psnr']:.2f} dB with null-text, "
          f"{report['ddim_inversion']['psnr']:.2f} dB without ({report['timings']['total_s']:.1f} s)")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from . import evaluation as ev
    from .metrics import load_clip_scorer, tiny_clip_scorer

    edits = ev.load_set(args.set)
    methods = ev.parse_methods(args.methods)
    shard = ev.parse_shard(args.shard)
    if args.limit is not None:
        if args.limit < 1:
            raise ArgumentError("--limit", "must be >= 1")
        edits = edits[:args.limit]
    out = _out_folder(args.out)
    pipeline = _load(args)
    reason = ""
    if pipeline.name == "tiny" and args.clip is None:
        clip = tiny_clip_scorer()
    else:
        try:
            clip = load_clip_scorer(args.clip, device=pipeline.device)
        except ModelError as exc:
            clip, reason = None, str(exc)
            print(f"warning: CLIP score skipped: {exc}", file=sys.stderr)
    margin = ev.BAND_MARGIN if args.ssim_e_margin is None else args.ssim_e_margin
    if not 0 <= margin <= 1:
        raise ArgumentError("--ssim-e-margin", f"must be in [0, 1], got {margin:g}")
    rows = ev.run(edits, pipeline, methods, out, clip, resume=args.resume, shard=shard, progress=not args.quiet,
                  ssim_e_margin=margin, ssim_e_include_box=args.ssim_e_include_box)
    ev.write_outputs(out, rows, edits, methods, ev.clip_note(clip, reason))
    print(f"wrote {out / 'metrics.csv'} ({len(rows)} rows), {out / 'table.md'}, {out / 'report.html'}")
    print((out / "table.md").read_text())
    return EXIT_OK


def cmd_eval_merge(args: argparse.Namespace) -> int:
    from . import evaluation as ev

    edits = ev.load_set(args.set)
    out = Path(args.out)
    rows = ev.merge([Path(s) for s in args.shards], out, edits)
    print(f"merged {len(args.shards)} shards into {out} ({len(rows)} rows)")
    print((out / "table.md").read_text())
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_spec

    notes: list[str] = []
    spec = import_spec(Path(args.file), warnings=notes)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    out = Path(args.out)
    if out.parent != Path("") and not out.parent.is_dir():
        raise ArgumentError("--out", f"folder not found: {out.parent}")
    spec.save(out)
    kinds = ", ".join(k.value for k in spec.kinds) or "no regions"
    print(f"wrote {out}: {len(spec.regions)} regions ({kinds})")
    return EXIT_OK


def cmd_keywords(args: argparse.Namespace) -> int:
    from . import load_spec
    from .runner import check_sampler, select_keywords

    spec = load_spec(args.spec)
    check_sampler(spec)
    pipeline = _load(args)
    regions = select_keywords(spec, pipeline, progress=not args.quiet)
    if args.json:
        print(json.dumps({"regions": regions}, indent=2))
        return EXIT_OK
    for i, region in enumerate(regions):
        print(f"regions[{i}] ({region['kind']}): {', '.join(region['keywords']) or '-'}")
        for image in ("source", "target"):
            if region[image]:
                words = ", ".join(f"{k['word']} {k['entropy']:.3f}" for k in region[image])
                print(f"  {image}: {words}")
    print("entropy in bits (0 = all attention on one level, 8 = spread over all 256)")
    return EXIT_OK


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _quiet_library_warnings() -> None:
    """Deprecation chatter from the model libraries is noise to a CLI user."""
    import warnings

    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category,
                                module=r"(diffusers|timm|transformers|torch|huggingface_hub|open_clip)(\.|$)")


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_library_warnings()
    try:
        args = _parser().parse_args(argv)
        commands = {"edit": cmd_edit, "invert": cmd_invert, "keywords": cmd_keywords, "eval": cmd_eval,
                    "eval-merge": cmd_eval_merge, "import": cmd_import}
        return commands[args.command](args)
    except MrgdError as exc:  # a bad argument, spec, image or inversion is the caller's to fix
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(exc, ModelError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, the traceback only on request
        if os.environ.get("MRGD_DEBUG"):
            traceback.print_exc()
        if _is_oom(exc):
            print("error: out of memory; try --dtype fp16, a smaller size, or fewer regions", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  "(set MRGD_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
