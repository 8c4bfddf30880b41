"""The console's pages, mounted at `/console/`."""

from __future__ import annotations

from django.urls import path

from apps.console.pages import audit as audit_pages
from apps.console.pages import compute as compute_pages
from apps.console.pages import dashboard as dashboard_pages
from apps.console.pages import deployment_rollouts, org_switch, sign_in, sso
from apps.console.pages import deployments as deployment_pages
from apps.console.pages import guardrail_profiles as profile_pages
from apps.console.pages import keys as keys_pages
from apps.console.pages import knowledge as knowledge_pages
from apps.console.pages import model_routes as route_pages
from apps.console.pages import notifications as notification_pages
from apps.console.pages import playground as playground_pages
from apps.console.pages import policies as policies_pages
from apps.console.pages import security as security_pages
from apps.console.pages import templates as templates_pages
from apps.console.pages import usage as usage_pages
from apps.console.pages.people import invitations as invitation_pages
from apps.console.pages.people import members as members_pages
from apps.console.pages.people import roles as role_pages
from apps.console.pages.people import settings as organization_settings_pages
from apps.console.pages.people import teams as team_pages

app_name = "console"

urlpatterns = [
    path("", sign_in.home_view, name="home"),
    path("login/", sign_in.login_view, name="login"),
    path("login/verify/", sign_in.login_verify_view, name="login-verify"),
    path("logout/", sign_in.logout_view, name="logout"),
    path("sso/start/", sso.SsoStartView.as_view(), name="sso-start"),
    path("sso/callback/", sso.SsoCallbackView.as_view(), name="sso-callback"),
    path("security/", security_pages.security_view, name="security"),
    path("security/password/", security_pages.password_change_view, name="password-change"),
    path("security/sessions/<int:pk>/end/", security_pages.session_end_view, name="session-end"),
    path("security/sessions/end-others/", security_pages.sessions_end_others_view, name="sessions-end-others"),
    path("security/2fa/enrol/", sign_in.twofactor_enrol_view, name="twofactor-enrol"),
    path("security/2fa/disable/", sign_in.twofactor_disable_view, name="twofactor-disable"),
    path("security/recovery-codes/", sign_in.recovery_codes_view, name="recovery-codes"),
    path(
        "security/recovery-codes/regenerate/",
        sign_in.recovery_codes_regenerate_view,
        name="recovery-codes-regenerate",
    ),
    path("organisation/", org_switch.org_switch_view, name="org-switch"),
    path("dashboard/", dashboard_pages.dashboard_view, name="dashboard"),
    path("deployments/", deployment_pages.deployments_view, name="deployments"),
    path("deployments/new/", deployment_pages.deployment_create_view, name="deployment-create"),
    path("deployments/external/", deployment_pages.external_deployment_create_view, name="deployment-external-create"),
    path("deployments/<int:pk>/", deployment_pages.deployment_detail_view, name="deployment-detail"),
    path("deployments/routes/", route_pages.model_routes_view, name="deployment-routes"),
    path("deployments/routes/new/", route_pages.model_route_create_view, name="deployment-route-create"),
    path("deployments/routes/<int:pk>/", route_pages.model_route_update_view, name="deployment-route-update"),
    path("deployments/routes/<int:pk>/delete/", route_pages.model_route_delete_view, name="deployment-route-delete"),
    path("deployments/<int:pk>/scale/", deployment_pages.deployment_scale_view, name="deployment-scale"),
    path("deployments/<int:pk>/settings/", deployment_pages.deployment_settings_view, name="deployment-settings"),
    path("deployments/<int:pk>/placement/", deployment_pages.deployment_placement_view, name="deployment-placement"),
    path("deployments/<int:pk>/stop/", deployment_pages.deployment_stop_view, name="deployment-stop"),
    path("deployments/<int:pk>/start/", deployment_pages.deployment_start_view, name="deployment-start"),
    path("notifications/", notification_pages.channels_view, name="notification-channels"),
    path("notifications/new/", notification_pages.channel_create_view, name="notification-channel-create"),
    path("notifications/<int:pk>/", notification_pages.channel_edit_view, name="notification-channel-edit"),
    path("notifications/<int:pk>/test/", notification_pages.channel_test_view, name="notification-channel-test"),
    path("notifications/<int:pk>/delete/", notification_pages.channel_delete_view, name="notification-channel-delete"),
    path("notifications/deliveries/", notification_pages.deliveries_view, name="notification-deliveries"),
    path("compute/providers/", compute_pages.providers_view, name="compute-providers"),
    path("compute/providers/new/", compute_pages.provider_create_view, name="compute-provider-create"),
    path("compute/providers/<int:pk>/", compute_pages.provider_edit_view, name="compute-provider-edit"),
    path("compute/providers/<int:pk>/test/", compute_pages.provider_test_view, name="compute-provider-test"),
    path("compute/providers/<int:pk>/delete/", compute_pages.provider_delete_view, name="compute-provider-delete"),
    path("compute/pools/", compute_pages.pools_view, name="compute-pools"),
    path("compute/pools/new/", compute_pages.pool_create_view, name="compute-pool-create"),
    path("compute/pools/<int:pk>/", compute_pages.pool_edit_view, name="compute-pool-edit"),
    path("compute/pools/<int:pk>/delete/", compute_pages.pool_delete_view, name="compute-pool-delete"),
    path(
        "deployments/<int:pk>/rollout/",
        deployment_rollouts.deployment_rollout_start_view,
        name="deployment-rollout-start",
    ),
    path(
        "deployments/<int:pk>/rollout/<str:action>/",
        deployment_rollouts.deployment_rollout_view,
        name="deployment-rollout",
    ),
    path("playground/", playground_pages.playground_view, name="playground"),
    path("playground/chat/", playground_pages.playground_chat_view, name="playground-chat"),
    path("playground/requests/<str:request_id>/", playground_pages.playground_request_view, name="playground-request"),
    path("keys/", keys_pages.keys_view, name="keys"),
    path("keys/new/", keys_pages.key_create_view, name="key-create"),
    path("keys/secret/", keys_pages.key_secret_view, name="key-secret"),
    path("keys/<int:pk>/", keys_pages.key_detail_view, name="key-detail"),
    path("keys/<int:pk>/rotate/", keys_pages.key_rotate_view, name="key-rotate"),
    path("keys/<int:pk>/revoke/", keys_pages.key_revoke_view, name="key-revoke"),
    path("keys/<int:pk>/vector-stores/", keys_pages.key_vector_stores_view, name="key-vector-stores"),
    path("knowledge/", knowledge_pages.knowledge_view, name="knowledge"),
    path("knowledge/new/", knowledge_pages.knowledge_store_create_view, name="knowledge-store-create"),
    path("knowledge/<int:pk>/", knowledge_pages.knowledge_store_view, name="knowledge-store"),
    path("knowledge/<int:pk>/delete/", knowledge_pages.knowledge_store_delete_view, name="knowledge-store-delete"),
    path("knowledge/<int:pk>/model/", knowledge_pages.knowledge_store_model_view, name="knowledge-store-model"),
    path("knowledge/<int:pk>/files/", knowledge_pages.knowledge_upload_view, name="knowledge-upload"),
    path(
        "knowledge/<int:pk>/files/<int:file_pk>/remove/",
        knowledge_pages.knowledge_file_remove_view,
        name="knowledge-file-remove",
    ),
    path(
        "knowledge/<int:pk>/files/<int:file_pk>/chunks/",
        knowledge_pages.knowledge_chunks_view,
        name="knowledge-file-chunks",
    ),
    path("usage/", usage_pages.usage_view, name="usage"),
    path("usage/export.csv", usage_pages.usage_export_view, name="usage-export"),
    path("usage/requests/<str:request_id>/", usage_pages.usage_request_view, name="usage-request"),
    path("audit/", audit_pages.audit_view, name="audit"),
    path("audit/export.<str:fmt>", audit_pages.audit_export_view, name="audit-export"),
    path("members/", members_pages.members_view, name="members"),
    path("members/<int:pk>/role/", members_pages.member_role_view, name="member-role"),
    path("members/<int:pk>/remove/", members_pages.member_remove_view, name="member-remove"),
    path("members/invitations/", invitation_pages.invitations_view, name="member-invitations"),
    path("members/invitations/new/", invitation_pages.invitation_create_view, name="member-invitation-create"),
    path(
        "members/invitations/<int:pk>/revoke/", invitation_pages.invitation_revoke_view, name="member-invitation-revoke"
    ),
    path("invitations/<str:token>/", invitation_pages.invitation_accept_view, name="member-invitation-accept"),
    path("members/teams/", team_pages.teams_view, name="member-teams"),
    path("members/teams/new/", team_pages.team_create_view, name="member-team-create"),
    path("members/teams/<int:pk>/", team_pages.team_view, name="member-team"),
    path("members/teams/<int:pk>/members/add/", team_pages.team_member_add_view, name="member-team-member-add"),
    path(
        "members/teams/<int:pk>/members/<int:member>/remove/",
        team_pages.team_member_remove_view,
        name="member-team-member-remove",
    ),
    path("members/teams/<int:pk>/delete/", team_pages.team_delete_view, name="member-team-delete"),
    path("members/roles/", role_pages.roles_view, name="member-roles"),
    path("members/organisation/", organization_settings_pages.organization_settings_view, name="member-settings"),
    path("members/roles/new/", role_pages.role_create_view, name="member-role-create"),
    path("members/roles/<int:pk>/", role_pages.role_edit_view, name="member-role-edit"),
    path("members/roles/<int:pk>/delete/", role_pages.role_delete_view, name="member-role-delete"),
    path("policies/", policies_pages.policies_view, name="policies"),
    path("policies/new/", policies_pages.policy_create_view, name="policy-create"),
    path("policies/<int:pk>/", policies_pages.policy_edit_view, name="policy-edit"),
    path("policies/<int:pk>/delete/", policies_pages.policy_delete_view, name="policy-delete"),
    path("policies/profiles/", profile_pages.profiles_view, name="policy-profiles"),
    path("policies/profiles/new/", profile_pages.profile_create_view, name="policy-profile-create"),
    path("policies/profiles/<int:pk>/", profile_pages.profile_edit_view, name="policy-profile-edit"),
    path("policies/profiles/<int:pk>/test/", profile_pages.profile_trial_view, name="policy-profile-trial"),
    path("policies/profiles/builtin/", profile_pages.profile_builtin_view, name="policy-profile-builtin"),
    path(
        "policies/profiles/builtin/test/", profile_pages.profile_builtin_trial_view, name="policy-profile-builtin-trial"
    ),
    path("templates/", templates_pages.templates_view, name="templates"),
    path("templates/new/", templates_pages.template_create_view, name="template-create"),
    path("templates/<int:pk>/", templates_pages.template_detail_view, name="template-detail"),
    path("templates/<int:pk>/versions/", templates_pages.template_version_create_view, name="template-version-create"),
    path("templates/<int:pk>/description/", templates_pages.template_describe_view, name="template-describe"),
    path("templates/<int:pk>/diff/", templates_pages.template_diff_view, name="template-diff"),
    path("templates/<int:pk>/delete/", templates_pages.template_delete_view, name="template-delete"),
]
