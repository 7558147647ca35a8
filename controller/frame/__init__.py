"""The frame every controller loop plugs into: settings, the work queue, typed caches fed by informers, the
error model, and the workers that run a loop's reconciles. It knows no loop; the loops know it."""
