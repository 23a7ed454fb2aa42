"""Training and knowledge distillation on WIDER FACE (torch; not part of the device SDK)."""
