"""rulesearch: discover synaptic plasticity rules."""
