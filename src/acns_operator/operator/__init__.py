"""The operator: admission webhook, ``Valid`` status conditions, Events and metrics.

kopf is embedded (``kopf.operator(...)`` with a registry and settings built from
:class:`~acns_operator.settings.OperatorSettings`); everything kopf does not do is
ours, in plain modules with the logic in pure functions::

    kube-apiserver ─ AdmissionReview ─► webhook.AdmissionServer (TLS: tls.TlsKeeper)
      │                                  └► kopf ► handlers.validate ► judge
      │                                     ► admission.decide_admission
      │                                     (judge = policy.validate, via .validation)
      ├─ watch CNP/CCNP (kopf) ─► handlers.observe ► Reconciler.observe
      │                                  (judge, PolicyStore, queue)
      │   leader.LeaderElector (Lease) ─lead/follow─► Reconciler.run (leader only)
      │                                  └► status.derive_conditions ► PATCH …/status
      │                                  └► status.should_post_event ► POST Event
      ├─ Secret (CA + cert) ◄─► tls.TlsKeeper (certs.renew, or cert-manager's)
      └─ ValidatingWebhookConfiguration ◄─ webhook.ensure_registered (manifests)

    health: /healthz /readyz /metrics (metrics.OperatorMetrics on an injected registry)

Modules: ``runner`` wires it all (:func:`~acns_operator.operator.runner.run_operator`);
``handlers`` holds every kopf decorator; ``judgement``, ``admission``, ``status``,
``certs``, ``manifests`` and ``leader.decide`` are pure; ``kube`` is the small API
client (``memory`` its in-memory twin for unit tests); ``process`` runs ``acns
operator`` as a child process for tests and the demo.
"""
