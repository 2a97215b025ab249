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

HELP = "text generation: train the char LSTM (1st ed.) or the word Transformer LM (2nd ed.), sample"
DEFAULT_OUT = "out/textgen"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
BOOK = {  # the book's settings for each model
    "lstm": {"epochs": 60, "batch_size": 128, "learning_rate": 0.01, "length": 400},
    "transformer": {"epochs": 200, "batch_size": 256, "learning_rate": 1e-3, "length": 50},
}


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "sample"])
    parser.add_argument("--model", choices=["lstm", "transformer"], default="lstm",
                        help="train: which model (sample reads it from the checkpoint)")
    parser.add_argument("--checkpoint",
                        help="train: where to save (default OUT/<model>.h5); sample: what to load "
                             "(default OUT/lstm.h5)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sample: temperature")
    parser.add_argument("--length", type=int,
                        help="characters (lstm) or words (transformer) to generate "
                             "(default 400 / 50, as the book)")
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
    train.add_argument("--epochs", type=int, help="default: the book's, 60 (lstm) / 200 (transformer)")
    train.add_argument("--steps-per-epoch", type=int, help="fewer (or more) batches per epoch")
    train.add_argument("--batch-size", type=int, help="default: the book's, 128 / 256")
    train.add_argument("--learning-rate", type=float, help="RMSprop's; default 0.01 / 1e-3")
    train.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    train.add_argument("--sample-every", type=int, default=1,
                       help="print samples every N epochs (0: never)")
    train.add_argument("--temperatures", default="0.2,0.5,0.7,1.0,1.5",
                       help="temperatures of those samples")
    train.add_argument("--resume", action="store_true",
                       help="go on training the model in --checkpoint")


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
    path = _checkpoint(args, args.model)
    book = BOOK[args.model]
    run = None
    if args.resume:
        run = load_text_model(path, learning_rate=args.learning_rate)
        if run.config["kind"] != args.model:
            raise ValueError(f"--resume: {path} holds a {run.config['kind']} model, not "
                             f"--model {args.model}")
    if args.model == "lstm":
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
    print(f"model: {args.model}; checkpoint after every epoch: {path}")
    run = trainer(data, epochs=args.epochs or book["epochs"], max_seconds=args.max_seconds,
                  steps_per_epoch=args.steps_per_epoch,
                  batch_size=args.batch_size or book["batch_size"],
                  learning_rate=args.learning_rate or book["learning_rate"], seed=args.seed,
                  temperatures=[float(t) for t in args.temperatures.split(",") if t.strip()],
                  sample_every=args.sample_every or None, sample_length=args.length or book["length"],
                  run=run, checkpoint=path)
    h = run.history
    print(f"{run.model.count_params():,} parameters; {len(h.step_losses)} steps in "
          f"{h.seconds:.0f} s; loss per epoch: " + ", ".join(f"{x:.4f}" for x in h.epoch_losses))
    return 0


def _sample(args):
    import numpy as np

    from ..generative import char_lstm, transformer_lm
    from ..generative.text_training import load_text_model
    path = Path(args.checkpoint) if args.checkpoint else Path(args.out) / "lstm.h5"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `textgen train` or give "
                                "--checkpoint")
    run = load_text_model(path)
    rng = np.random.default_rng(args.seed)
    kind = run.config["kind"]
    length = args.length or BOOK[kind]["length"]
    if kind == "lstm":
        prompt = args.prompt if args.prompt is not None else "the meaning of life is "
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
