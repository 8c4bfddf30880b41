"""The people pages, one module per tab: members, invitations, teams and roles. Writes go through
`apps.orgs.services` and `apps.rbac.services`; nobody hands out, or takes away, a role with more rights than their
own (`role_within_reach`)."""
