"""`weights list | fetch NAME | verify PATH`: the known pretrained files, getting them, and checking
a file against the model it is for.

    python -m micrograd_gen weights list
    python -m micrograd_gen weights fetch vgg19
    python -m micrograd_gen weights verify vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
"""
import argparse
import sys
from pathlib import Path

from .. import download, io, weights
from ..download import DownloadError, file_hash

HELP = "list, download or check the pretrained VGG19 / InceptionV3 weight files"
ALIASES = {"vgg19": "vgg19_notop", "inception_v3": "inception_v3_notop",
           "inceptionv3": "inception_v3_notop"}
MODELS = {"vgg19": "vgg19_notop", "inception_v3": "inception_v3_notop"}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the known files and where each one is found")
    fetch = sub.add_parser("fetch", help="download a file into the cache (md5-checked)")
    fetch.add_argument("name", help="vgg19, inception_v3, all, or a manifest entry name")
    verify = sub.add_parser("verify", help="print each layer of a weight file, its shapes and "
                                           "whether it matches the model")
    verify.add_argument("path", help="a Keras .h5 weight file")
    verify.add_argument("--model", choices=sorted(MODELS),
                        help="the model the file is for (default: guessed from the file)")
    verify.add_argument("--by-name", action="store_true",
                        help="match layers by name (default: by name when all names are there, "
                             "else by order, as loading does)")


def run(args):
    return {"list": _list, "fetch": _fetch, "verify": _verify}[args.action](args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m micrograd_gen weights", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (DownloadError, io.WeightFileError, KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1


def _list(args):
    for name, e in weights.manifest().items():
        try:
            path, source = weights.find(name)
            where = ("not downloaded (python -m micrograd_gen weights fetch "
                     f"{name.replace('_notop', '')})" if path is None else
                     f"{path} (md5 checked)" if source == "cache" else
                     f"{path} (8-bit archive; expanded into {weights.expanded_path(name)} when "
                     "a command first needs it)" if source == "archive" else
                     f"{path} (local copy, not hash-checked)")
        except DownloadError:
            where = f"{weights.cached_path(name)} has the WRONG md5 (delete it to download again)"
        top = "" if e.get("include_top") is None else f" include_top={e['include_top']}"
        print(f"{name}: {e['model']}{top}, {e['file']}, "
              f"{e['bytes'] / 1e6:.1f} MB, {e['layers_with_weights']} layers with weights\n"
              f"    url  {e['url']}\n    md5  {e['md5']}\n    here {where}")
    print(f"cache folder: {download.weights_dir()}")
    return 0


def _fetch(args):
    known = weights.manifest()
    names = list(known) if args.name == "all" else [ALIASES.get(args.name.lower(), args.name)]
    for name in names:
        path = weights.fetch(name)
        print(path)
    return 0


def _guess_model(path, f):
    for model, name in MODELS.items():
        if Path(path).name == weights.entry(name)["file"]:
            return model
    if io.file_format(f) == "legacy":
        names = {fl.name for fl in io.legacy_layers(f, path)}
        if "block1_conv1" in names:
            return "vgg19"
        if "mixed0" in names or "conv2d_1" in names:
            return "inception_v3"
    raise io.WeightFileError(f"{path}: cannot tell which model this file is for; pass --model")


def _build(model):
    from .. import applications
    build = {"vgg19": applications.VGG19, "inception_v3": applications.InceptionV3}[model]
    return build(weights=None)


def _verify(args):
    path = Path(args.path)
    with io.open_weight_file(path) as f:
        model_name = args.model or _guess_model(path, f)
        model = _build(model_name)
        fmt = io.file_format(f)
        matches = io.match_layers(model, f, path, by_name=True if args.by_name else "auto")
        print(f"{path}: {fmt} Keras weight file, checked against {model.name} "
              f"({sum(1 for l in model.layers if l.weights)} layers with weights)")
        width = max(len(m.layer.name) for m in matches)
        for m in matches:
            model_shapes = io._fmt([tuple(w.shape) for w in m.layer.weights])
            file_shapes = io._fmt(m.file_layer.shapes) if m.file_layer else "(absent)"
            label = m.layer.name if (m.file_layer is None or m.file_layer.name == m.layer.name) \
                else f"{m.layer.name} <- {m.file_layer.name}"
            status = "ok" if m.ok else "MISMATCH"
            print(f"  {label:<{width}}  {status:<8}  file {file_shapes}"
                  + ("" if m.ok else f"  model {model_shapes}"))
    bad = [m for m in matches if not m.ok]
    official = weights.entry(MODELS[model_name])["md5"]
    md5 = file_hash(path)
    print(f"{len(matches) - len(bad)} of {len(matches)} layers match; md5 {md5} "
          + ("(the official file)" if md5 == official else "(not the official file's md5 "
             f"{official}: fine for a file passed by path)"))
    for m in bad:
        print(f"  {m.problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
