"""The NAT traversal methods on the lab's sockets: the controller's handlers, registered."""

from qubes_portfwd.controller import nat_requests

from . import method

method("admin.vm.portfwd.NatRequest", payload=True)(nat_requests.vm_portfwd_nat_request)
method("admin.vm.portfwd.NatAddress", arg=True)(nat_requests.vm_portfwd_nat_address)
method("admin.portfwd.Pending", dest="adminvm")(nat_requests.portfwd_pending)
method("admin.portfwd.Approve", dest="adminvm", arg=True)(nat_requests.portfwd_approve)
method("admin.portfwd.Deny", dest="adminvm", arg=True)(nat_requests.portfwd_deny)
