"""Policy judgement (and, later, compilation) on parsed cilium.io/v2 objects. Pure.

* :func:`~acns_operator.policy.validation.validate`: object + settings -> verdict;
* :mod:`~acns_operator.policy.sanitize`: upstream Cilium's own rules;
* :mod:`~acns_operator.policy.aks`: the AKS profile's limits;
* :mod:`~acns_operator.policy.dns_coverage`: DNS-rule coverage warnings;
* :mod:`~acns_operator.policy.not_enforced`: admitted parts the agent does not enforce.
"""

from acns_operator.policy.validation import validate
from acns_operator.policy.verdict import Verdict

__all__ = ["Verdict", "validate"]
