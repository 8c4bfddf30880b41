"""REST endpoints of the knowledge base: files (upload, list, delete), vector stores (create, list, edit, delete,
search) and the files attached to them (attach, list, detach). The same services as /v1 and the console.

Creating a store asks its embedding model for its vector size through the gateway, with a key the service commits
first; so it runs apart from the request (`_run_apart`): in a thread of its own, in no transaction of the request's,
where the gateway's own connections see that key."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connections
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.keys.models import ApiKey
from apps.knowledge import services
from apps.knowledge.embedding import EmbeddingError, run_in_own_loop
from apps.knowledge.models import KnowledgeFile, VectorStore, VectorStoreFile
from apps.knowledge.retrieval import query_text, stores_search
from apps.knowledge.selectors import rows_in_allowed_stores
from apps.knowledge.serializers import (
    KnowledgeFileOut,
    KnowledgeFileUploadIn,
    VectorStoreCreateIn,
    VectorStoreFileAttachIn,
    VectorStoreFileOut,
    VectorStoreOut,
    VectorStoreSearchIn,
    VectorStoreSearchOut,
    VectorStoreUpdateIn,
)
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    TenantViewSet,
    service_call,
    service_schema,
)
from inferia_runtime.errors import DomainRefusal


def _refusal(error: DomainRefusal | DjangoValidationError) -> exceptions.APIException:
    """A service's refusal in DRF's shape: an embedding model the gateway would not serve is a 400 naming it, its
    limits and outages keep the gateway's status (429, 503, 504), anything else is a 400."""
    if isinstance(error, EmbeddingError) and error.status in (429, 503, 504):
        failure = exceptions.APIException(error.message)
        failure.status_code = error.status
        return failure
    detail = getattr(error, "message_dict", None) or getattr(error, "messages", None) or str(error)
    return exceptions.ValidationError(detail)


def _run_apart(function: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a write service that commits its own steps and asks the gateway in between, in a thread of its own (see
    the module's docstring); its refusals become 400s, as `service_call`'s do."""

    def run() -> Any:
        try:
            return function(**kwargs)
        finally:
            connections.close_all()  # this thread's connections end with it

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-apart") as pool:
            return pool.submit(run).result()
    except (DomainRefusal, DjangoValidationError) as error:
        raise _refusal(error) from error
    except IntegrityError as error:
        raise exceptions.ValidationError("This conflicts with an existing record.") from error


class KnowledgeFileViewSet(
    ServiceCreateMixin, ServiceDestroyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Files of the caller's organisations, to attach to vector stores. `POST` is a multipart upload."""

    model = KnowledgeFile
    serializer_class = KnowledgeFileOut
    filterset_fields = ["organization", "purpose"]
    search_fields = ["filename", "public_id"]
    ordering_fields = ["created_at", "filename", "bytes"]
    create_in = KnowledgeFileUploadIn
    service_object = "file"
    delete_service = staticmethod(services.knowledge_file_delete)

    @staticmethod
    def create_service(**values: Any) -> KnowledgeFile:
        upload = values.pop("file")
        return services.knowledge_file_create(
            handle=upload, filename=upload.name or "", content_type=upload.content_type or "", **values
        )

    @extend_schema(request={"multipart/form-data": KnowledgeFileUploadIn}, responses={201: KnowledgeFileOut})
    def create(self, request: Request) -> Response:
        return super().create(request)


class AllowedStoresMixin(TenantViewSet):
    """Narrows what a key limited to some vector stores (`allowed_vector_stores`) sees to those stores and their
    files, as /v1 does: any other reads as unknown (404, absent from lists). A signed-in user has no such limit."""

    def restricted(self, action: str) -> QuerySet[Any]:
        auth = self.request.auth
        allowed = auth.allowed_vector_stores if isinstance(auth, ApiKey) else ()
        return rows_in_allowed_stores(super().restricted(action), allowed=allowed)


@service_schema(detail_out=VectorStoreOut, update_in=VectorStoreUpdateIn, create_in=VectorStoreCreateIn)
class VectorStoreViewSet(
    AllowedStoresMixin, ServiceDestroyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Vector stores of the caller's organisations; `search` ranks a store's chunks for a query."""

    model = VectorStore
    serializer_class = VectorStoreOut
    filterset_fields = ["organization", "embedding_model"]
    search_fields = ["name", "public_id"]
    ordering_fields = ["created_at", "name", "last_active_at", "usage_bytes"]
    tenant_actions = {"search": "view"}
    service_object = "store"
    delete_service = staticmethod(services.vector_store_delete)

    def create(self, request: Request) -> Response:
        """Create a store, asking its embedding model for its vector size first (outside any transaction: see the
        module's docstring)."""
        data = VectorStoreCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        self.check_may_add(values["organization"])
        store = _run_apart(services.vector_store_create_probed, **values, actor=self.actor, context=self.audit_context)
        return Response(VectorStoreOut(store).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        store = self.get_object()  # 404/403 before any 400
        data = VectorStoreUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        model = values.pop("embedding_model", None)
        if values or model is None:  # the plain fields first: their refusals leave the model unchanged
            store = service_call(
                services.vector_store_update, store=store, **values, actor=self.actor, context=self.audit_context
            )
        if model is not None:
            # Asks the new model its vector size through the gateway: apart from the request (module docstring).
            store = _run_apart(
                services.vector_store_embedding_change,
                store=store,
                embedding_model=model,
                actor=self.actor,
                context=self.audit_context,
            )
        return Response(VectorStoreOut(store).data)

    @extend_schema(request=VectorStoreSearchIn, responses=VectorStoreSearchOut)
    @action(detail=True, methods=["post"])
    def search(self, request: Request, pk: str) -> Response:
        """The store's chunks best matching `query`, best first (embedding the query is metered on the store's key)."""
        store = self.get_object()
        data = VectorStoreSearchIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            text = query_text(values["query"])
            hits = run_in_own_loop(
                lambda: stores_search(
                    stores=[store],
                    query=text,
                    max_num_results=values["max_num_results"],
                    filters=values["filters"],
                    score_threshold=values["score_threshold"],
                )
            )
        except DomainRefusal as error:
            raise _refusal(error) from error
        rows = [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "index": hit.index,
                "score": round(hit.score, 6),
                "attributes": hit.attributes,
                "text": hit.text,
            }
            for hit in hits
        ]
        return Response(VectorStoreSearchOut({"search_query": values["query"], "data": rows}).data)


@service_schema(detail_out=VectorStoreFileOut, create_in=VectorStoreFileAttachIn)
class VectorStoreFileViewSet(
    AllowedStoresMixin,
    ServiceCreateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Files attached to stores (filter by `vector_store`): `POST` attaches one of the organisation's files, which
    is then cut and embedded in the background; `DELETE` detaches it (the file itself stays)."""

    model = VectorStoreFile
    serializer_class = VectorStoreFileOut
    filterset_fields = ["organization", "vector_store", "file", "status"]
    ordering_fields = ["created_at", "status"]
    create_in = VectorStoreFileAttachIn
    create_service = staticmethod(services.vector_store_file_attach)
    service_object = "store_file"
    delete_service = staticmethod(services.vector_store_file_detach)

    def base_queryset(self) -> Any:
        return VectorStoreFile.objects.select_related("vector_store", "file")

    def create_values(self, values: dict[str, Any]) -> dict[str, Any]:
        store = values.pop("vector_store")
        if not VectorStore.objects.restrict(self.principal, "change").filter(pk=store.pk).exists():
            raise exceptions.PermissionDenied("You may not change this vector store.")
        return {**values, "store": store}
