"""Every setting of every stage, declared once.

Each module holds the pydantic models of one stage (or of a part several stages share), with
nothing heavier than pydantic imported, so the command line derives its options from them at
start-up (`frugal.cli_options`) and `frugal --help` stays fast. The stage modules import their
config from here.
"""

# The model every stage uses unless told otherwise: small enough for a 2-core CPU.
DEFAULT_MODEL = "smollm2-135m-instruct"
