"""One configuration system: grouped dataclasses, parsed by transformers' ``HfArgumentParser``.

Every option of every command is a field of one group (``groups``, ``training``), with its help
text and its check in ``__post_init__``. A command is built from the groups it needs, so an option
has one name, one default and one meaning everywhere: on the command line (``--max-history 20``),
in a YAML recipe (``max_history: 20``, flat or under its group: ``prompts: {max_history: 20}``), in
the Python API and in ``m6gen chat``'s ``set``.

    parser = ConfigParser([DataArgs, PromptArgs], prog="m6gen data")
    data, prompt = parser.parse(argv)                    # --config FILE fills in; flags win

Precedence: field defaults < ``--config`` file < flags typed on the command line.
"""

from m6gen.config.groups import (  # noqa: F401
    FORMATS,
    RANKINGS,
    ConfigError,
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    ModelArgs,
    PriorArgs,
    PromptArgs,
    RerankArgs,
    RuntimeArgs,
    SASRecArgs,
    at_least,
    check_k_fits_beams,
    one_of,
    option,
)
from m6gen.config.parser import ConfigParser, read_config_file, to_dict  # noqa: F401
from m6gen.config.training import (  # noqa: F401
    TRAIN_GROUPS,
    HybridArgs,
    LoraArgs,
    TrainArgs,
    TrainConfig,
    TrainError,
)
