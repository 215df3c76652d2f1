"""`frugal experts`: domain LoRA experts, a router, merged contenders and the comparison."""
