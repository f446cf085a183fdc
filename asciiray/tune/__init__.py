"""Ray Tune searches over the training options, described by a YAML spec (see tune/*.yaml).

- `spec`: reading and checking a spec into typed dataclasses (no Ray);
- `run`: running or resuming the experiment with a `ray.tune.Tuner`, one `asciiray train` run per trial;
- `callbacks`: the Ray callbacks the experiment pickles with itself (progress lines, epochs to Tune);
- `results`: reading an experiment back through Ray's result objects into rows, a table, a CSV, a PNG.
"""
