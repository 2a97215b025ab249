"""`weights list | fetch NAME | verify PATH | export CHECKPOINT OUT.weights.h5`: the known pretrained
files, getting them, checking a file against the model it is for, and turning a training
checkpoint of this command line into a Keras 3 weight file.

    python -m micrograd_gen weights list
    python -m micrograd_gen weights fetch vgg19
    python -m micrograd_gen weights verify vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
    python -m micrograd_gen weights verify out/vae/vae.h5          # a checkpoint: what it holds
    python -m micrograd_gen weights export out/vae/vae.h5 vae.weights.h5
"""
import argparse
import sys
from pathlib import Path

from .. import download, io, weights
from ..download import DownloadError, file_hash

HELP = ("list, download or check the pretrained VGG19 / InceptionV3 weight files; export a "
        "training checkpoint as a Keras 3 .weights.h5 file")
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
    export = sub.add_parser("export", help="write the model of a training checkpoint (textgen, "
                                           "vae, gan, denoise, train-style) as a Keras 3 "
                                           ".weights.h5 file")
    export.add_argument("checkpoint", help="a checkpoint written by a training command")
    export.add_argument("out", help="the Keras 3 weight file to write (its name ends in .weights.h5)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it exists (default: refuse)")


def run(args):
    return {"list": _list, "fetch": _fetch, "verify": _verify, "export": _export}[args.action](args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m micrograd_gen weights", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (DownloadError, ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
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
    if io.file_format(f) == "keras3" and "layers/conv2d" in f:
        # Keras 3 files have no layer names: only InceptionV3 has batch normalisation.
        return "inception_v3" if "layers/batch_normalization" in f else "vgg19"
    raise io.WeightFileError(f"{path}: cannot tell which model this file is for; pass --model")


def _build(model):
    from .. import applications
    build = {"vgg19": applications.VGG19, "inception_v3": applications.InceptionV3}[model]
    return build(weights=None)


# ---- training checkpoints (generative/checkpoint.py) -------------------------------------------------

def is_checkpoint(f):
    """Whether an open HDF5 file is a checkpoint of this command line (its `tree`, a dataset, or
    an attribute in checkpoints written before)."""
    return ("tree" in f or "tree" in f.attrs) and "arrays" in f


def checkpoint_model(path):
    """(what it is, the trained model) rebuilt from a training checkpoint, with its weights."""
    from ..generative import checkpoint
    payload = checkpoint.read_checkpoint(path)
    models, extra = set(payload["models"]), payload.get("extra") or {}
    if "textgen" in extra:
        from ..generative.text_training import load_text_model
        run = load_text_model(path)
        return f"textgen {run.config['kind']} model", run.model
    if "fast_style" in extra:
        from ..generative.fast_style import load_model
        return "train-style transformer network", load_model(path)
    if models == {"vae"}:
        from ..generative.vae import load_vae
        return "vae (encoder, decoder)", load_vae(path)
    if models == {"generator", "discriminator"}:
        from ..generative.dcgan import load_gan
        return "gan (generator, discriminator)", load_gan(path)
    if models == {"denoiser"}:
        from ..generative.denoise import load_denoiser
        return "denoise autoencoder", load_denoiser(path)
    raise ValueError(f"{path}: a training checkpoint of models {sorted(models)}, which no command "
                     "of this version writes")


def _export(args):
    from .. import keras3_weights
    source, out = Path(args.checkpoint), Path(args.out)
    if not keras3_weights.is_keras3_name(out):
        raise ValueError(f"export: OUT {str(out)!r} must end in {keras3_weights.SUFFIX} (Keras 3 "
                         "reads its weight files only under such names)")
    if not source.is_file():
        raise FileNotFoundError(f"export: no checkpoint file {source}")
    if out.exists() and out.resolve() == source.resolve():
        raise ValueError(f"export: OUT {out} is the checkpoint itself")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"export: {out} exists; pass --overwrite to replace it")
    with io.open_weight_file(source) as f:
        if not is_checkpoint(f):
            raise ValueError(f"export: {source} is not a training checkpoint of this command "
                             "line (for a Keras weight file, load it and call save_weights)")
    what, model = checkpoint_model(source)
    io.save_weights(model, out)
    groups = [s for s in keras3_weights.saveables(model) if s.weights]
    print(f"{out}: the {what} of {source}, in Keras 3's layout: {len(groups)} variable groups, "
          f"{sum(w.size for s in groups for w in s.weights):,} numbers")
    for s in groups:
        print(f"  {s.vars_path:<48} {', '.join(str(tuple(w.shape)) for w in s.weights)}")
    print("Keras 3 loads it with model.load_weights(...) into a model built the same way.")
    return 0


def _verify_checkpoint(path):
    from ..generative import checkpoint
    payload = checkpoint.read_checkpoint(path)
    print(f"{path}: a micrograd_gen training checkpoint ({payload.get('format')}), step "
          f"{payload.get('step')}")
    for name, arrays in payload["models"].items():
        print(f"  model {name}: {len(arrays)} arrays, {sum(int(a.size) for a in arrays):,} numbers")
    for name in payload.get("optimizers") or {}:
        print(f"  optimiser state {name}")
    what, model = checkpoint_model(path)    # rebuilding checks every array's shape
    print(f"the {what} rebuilds from it: every array fits ({len(model.weights)} weights); "
          f"`weights export {path} OUT.weights.h5` writes it for Keras 3")
    return 0


def _verify(args):
    path = Path(args.path)
    with io.open_weight_file(path) as f:
        checkpoint = is_checkpoint(f)
    if checkpoint:
        return _verify_checkpoint(path)
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
