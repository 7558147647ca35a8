"""The frame every controller loop plugs into, and that knows no loop: ``settings``, the work ``queue``, typed
caches fed by informers (``store``), the error model (``failures``), the workers that run a loop's reconciles
(``loop``), reconcile log fields (``logs``), ``metrics``, and the one way to build a Secret the controller writes
(``secrets``)."""
