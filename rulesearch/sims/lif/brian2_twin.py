"""The task's neuron built in Brian2, the independent reference of the spiking tests and benchmarks.

Brian2 is not a dependency of rulesearch (it is in the test extra): the caller imports it and
passes the module in. The inhibitory synapses run the rule ``pre: x_post - a; post: b * x_pre``
as Brian2 ``on_pre``/``on_post`` statements, with ``a`` and ``b`` shared synapse variables, so
that one network serves several rules without new code generation.
"""
from __future__ import annotations

import numpy as np


def vogels_network(b2, task, trial: int = 0):
    """(network, inhibitory synapses, spike monitor) for trial ``trial`` of a ``lif`` task, with the
    task's input spikes replayed by a SpikeGeneratorGroup; set ``synapses.a``, ``synapses.b``."""
    c, s = task.config, task.state
    ptr = s.spk_ptr[trial]
    steps = np.repeat(np.arange(s.n_steps), np.diff(ptr))
    affs = s.spk_aff[ptr[0]:ptr[-1]]
    b2.start_scope()
    ms, mV, nS, pF = b2.ms, b2.mV, b2.nS, b2.pF
    b2.defaultclock.dt = c.dt_ms * ms
    ns = dict(C=c.capacitance_pf * pF, gl=c.g_leak_ns * nS, el=c.e_leak_mv * mV, ee=c.e_exc_mv * mV,
              ei=c.e_inh_mv * mV, vt=c.v_threshold_mv * mV, vr=c.v_reset_mv * mV, taue=c.tau_exc_ms * ms,
              taui=c.tau_inh_ms * ms, gexc=c.g_exc_ns * nS, ginh=c.g_inh_ns * nS, eta=c.eta, wmax=c.w_max,
              taupre=c.tau_pre_ms * ms, taupost=c.tau_post_ms * ms)
    neuron = b2.NeuronGroup(1, """dv/dt = (gl*(el - v) + ge*(ee - v) + gi*(ei - v)) / C : volt (unless refractory)
                                  dge/dt = -ge / taue : siemens
                                  dgi/dt = -gi / taui : siemens""",
                            threshold="v > vt", reset="v = vr", refractory=c.refractory_ms * ms,
                            method="exponential_euler", namespace=ns)
    neuron.v = c.e_leak_mv * mV
    inputs = b2.SpikeGeneratorGroup(c.n_aff, affs, steps * c.dt_ms * ms)
    exc = b2.Synapses(inputs, neuron, "w : 1", on_pre="ge += w * gexc", namespace=ns)
    exc.connect(i=np.flatnonzero(s.exc), j=0)
    exc.w = s.w0[trial, 0, s.exc]
    inh = b2.Synapses(inputs, neuron, """w : 1
                                         a : 1 (shared)
                                         b : 1 (shared)
                                         dapre/dt = -apre / taupre : 1 (event-driven)
                                         dapost/dt = -apost / taupost : 1 (event-driven)""",
                      on_pre="""apre += 1
                                w = clip(w + eta * (apost - a), 0, wmax)
                                gi += w * ginh""",
                      on_post="""apost += 1
                                 w = clip(w + eta * b * apre, 0, wmax)""", namespace=ns)
    inh.connect(i=np.flatnonzero(~s.exc), j=0)
    inh.w = s.w0[trial, 0, ~s.exc]
    monitor = b2.SpikeMonitor(neuron)
    return b2.Network(neuron, inputs, exc, inh, monitor), inh, monitor
