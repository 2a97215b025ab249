"""`python -m micrograd_gen textgen train|sample`: the book's two text generators.

    python -m micrograd_gen textgen train --model lstm --epochs 3          # Nietzsche, char LSTM
    python -m micrograd_gen textgen train --model transformer --epochs 1 --steps-per-epoch 50
    python -m micrograd_gen textgen sample --checkpoint out/textgen/lstm.h5 \\
        --prompt "the meaning of life is " --temperature 0.7 --length 400

train prints a progress line (batch, loss, samples/s, ETA), samples at several temperatures after
every `--sample-every` epochs, and saves a checkpoint (weights, optimiser state, vocabulary, config,
loss history; written atomically) after every epoch, so an interrupted run keeps its last epoch.
"""
from pathlib import Path

from . import _output, _training, _values

HELP = "text generation: train the char LSTM (1st ed.) or the word Transformer LM (2nd ed.), sample"
DEFAULT_OUT = "out/textgen"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
BOOK = {  # the book's settings for each model
    "lstm": {"epochs": 60, "batch_size": 128, "learning_rate": 0.01, "length": 400},
    "transformer": {"epochs": 200, "batch_size": 256, "learning_rate": 1e-3, "length": 50},
}


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "sample"],
                        help="train: fit on a corpus, resuming from the checkpoint; sample: "
                             "continue a prompt")
    parser.add_argument("--model", choices=["lstm", "transformer"],
                        help="which model (default: the checkpoint's when there is one, else lstm)")
    parser.add_argument("--checkpoint",
                        help="train: where to save and resume from; sample: what to load "
                             "(default: OUT/<model>.h5)")
    parser.add_argument("--temperature", type=_values.number(0.01, 100), default=0.7,
                        help="sample: temperature")
    parser.add_argument("--length", type=_values.positive_int,
                        help="characters (lstm) or words (transformer) to generate "
                             "(default: 400 / 50, as the book)")
    parser.add_argument("--prompt", help="sample: the text to continue (default: 'this movie' for "
                                         "the transformer, 'the meaning of life is ' for the lstm)")
    parser.add_argument("--context", choices=["window", "carry"], default="window",
                        help="lstm generation: 'window' reproduces the book's 60-character window "
                             "exactly, 'carry' keeps one state over the whole text (faster)")
    train = parser.add_argument_group("train")
    train.add_argument("--corpus",
                       help="lstm: a .txt file (default: Nietzsche, downloaded and cached); "
                            "transformer: a folder of .txt files or a .tar(.gz) of them such as "
                            "aclImdb (default: $MICROGRAD_GEN_DATA/imdb, the cache, else download)")
    train.add_argument("--epochs", type=_values.positive_int,
                       help="epochs from the start of training, so a resumed run goes on to the "
                            "same end (default: the book's, 60 for lstm, 200 for transformer)")
    train.add_argument("--steps-per-epoch", type=_values.positive_int,
                       help="fewer (or more) batches per epoch (default: one pass over the corpus)")
    train.add_argument("--batch-size", type=_values.whole(1, 65536),
                       help="default: the book's, 128 / 256")
    train.add_argument("--learning-rate", type=_values.learning_rate,
                       help="RMSprop's, also when resuming (default: 0.01 / 1e-3 for a new run, "
                            "the checkpoint's when resuming)")
    train.add_argument("--max-seconds", type=_values.seconds,
                       help="stop training after this many seconds (default: no limit)")
    train.add_argument("--sample-every", type=_values.count, default=1,
                       help="print samples every N epochs (0: never)")
    train.add_argument("--temperatures", type=_values.number_list(0.01, 100),
                       default="0.2,0.5,0.7,1.0,1.5", help="temperatures of those samples")
    _training.add_arguments(train)


def _imdb_path():
    from ..download import datasets_dir, fetch, shared_data_dir
    candidates = []
    shared = shared_data_dir()
    if shared:
        candidates += [shared / "imdb" / "aclImdb_train.tar.gz", shared / "imdb" / "aclImdb"]
    cache = datasets_dir() / "imdb"
    candidates += [cache / "aclImdb", cache / "aclImdb_v1.tar.gz"]
    for path in candidates:
        if path.exists():
            return path
    return fetch(IMDB_URL, cache / "aclImdb_v1.tar.gz")


def _checkpoint(args, model):
    return Path(args.checkpoint) if args.checkpoint else Path(args.out) / f"{model}.h5"


def _train(args):
    from ..generative import char_lstm, transformer_lm
    from ..generative.text_training import load_text_model
    path = _checkpoint(args, args.model or "lstm")
    if args.corpus is not None and not Path(args.corpus).exists():
        raise FileNotFoundError(f"--corpus {args.corpus}: no such file or folder")
    _output.refuse_inputs(path, {"corpus": args.corpus}, "--checkpoint")
    with _training.locked(path):
        payload = _training.plan(args, path, "textgen", "textgen")
        run = load_text_model(path) if payload is not None else None
        kind = run.config["kind"] if run else args.model or "lstm"
        if args.model and kind != args.model:
            raise ValueError(f"{path} holds a {kind} model, not --model {args.model}; give "
                             "another --checkpoint, or --fresh to replace it")
        book = BOOK[kind]
        epochs = args.epochs or book["epochs"]
        learning_rate = args.learning_rate or book["learning_rate"]
        done = len(run.history.epoch_losses) if run else 0
        if done >= epochs:
            return _training.nothing_to_do("textgen", path, done, epochs, "epochs")
        if run:
            saved = run.optimizer.learning_rate
            if args.learning_rate is not None:   # what the user asked wins over the saved state
                run.optimizer.learning_rate = args.learning_rate
                run.config["learning_rate"] = args.learning_rate
            learning_rate = run.optimizer.learning_rate
            print(f"textgen: epochs {done + 1}..{epochs}, learning rate {learning_rate:g}"
                  + (f" (the checkpoint had {saved:g})" if learning_rate != saved
                     else " (the checkpoint's)"), flush=True)
        if kind == "lstm":
            from ..data.text import load_text_corpus
            data = load_text_corpus(args.corpus)
            print(f"corpus: {len(data):,} characters, {len(set(data))} distinct")
            trainer = char_lstm.train_char_lstm
        else:
            from ..data.text import text_files_dataset
            corpus = Path(args.corpus) if args.corpus else _imdb_path()
            data = list(text_files_dataset(corpus))
            print(f"corpus: {len(data):,} texts from {corpus}")
            trainer = transformer_lm.train_transformer_lm
        print(f"model: {kind}; checkpoint after every epoch: {path}")
        run = trainer(data, epochs=epochs - done, max_seconds=args.max_seconds,
                      steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch_size or book["batch_size"],
                      learning_rate=learning_rate, seed=args.seed,
                      temperatures=args.temperatures, sample_every=args.sample_every or None,
                      sample_length=args.length or book["length"], run=run, checkpoint=path)
    h = run.history
    print(f"{run.model.count_params():,} parameters; {len(h.step_losses)} steps in "
          f"{h.seconds:.0f} s; loss per epoch: " + ", ".join(f"{x:.4f}" for x in h.epoch_losses))
    return 0


def _sample(args):
    import numpy as np

    from ..generative import char_lstm, transformer_lm
    from ..generative.text_training import load_text_model
    path = _checkpoint(args, args.model or "lstm")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `textgen train` or give "
                                "--checkpoint")
    _training.read_existing(path, "textgen", writing=False)   # another kind: a clear error
    run = load_text_model(path)
    if args.model and run.config["kind"] != args.model:
        raise ValueError(f"{path} holds a {run.config['kind']} model, not --model {args.model}")
    rng = np.random.default_rng(args.seed)
    kind = run.config["kind"]
    length = args.length or BOOK[kind]["length"]
    if kind == "lstm":
        prompt = args.prompt if args.prompt is not None else "the meaning of life is "
        unknown = sorted(set(prompt) - set(run.vocab.chars))
        if not prompt or unknown:
            raise ValueError(f"--prompt {prompt!r}: " + (
                f"characters the model never saw: {unknown}" if unknown else "give some text")
                + f" (the model knows {''.join(run.vocab.chars)!r})")
        text = char_lstm.generate_text(run.model, run.vocab, prompt, length, args.temperature, rng,
                                       context=args.context)
        print(prompt + text)
    else:
        prompt = args.prompt if args.prompt is not None else "this movie"
        text = transformer_lm.generate_text(run.model, run.vocab, prompt, length,
                                            args.temperature, rng)
        print(prompt + " " + text)
    return 0


def run(args):
    if args.action == "train":
        return _train(args)
    return _sample(args)
