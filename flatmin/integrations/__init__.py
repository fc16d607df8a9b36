"""flatmin's methods in other training loops, each adapter driving the same :class:`~flatmin.step.Stepper`
(the step rules written once: BatchNorm statistics from the first pass, fp16 unscale and check after
every pass, per-micro-batch perturbation, clipping of the final G, DDP's no_sync and one average of G).
The host library is imported by its adapter's module only."""
