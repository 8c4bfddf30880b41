"""The knowledge pages: an organisation's vector stores (files counted by ingestion status, stored bytes, embedding
model), creating one (its vectors' size asked of the embedding model) and deleting one; a store's page with its
files and their ingestion progress (live over the console's WebSocket), an upload that also takes files dropped onto
it, removing a file, a search that ranks the store's chunks, and a file's chunks in order. Every query goes through
`.restrict()`; every write through `apps.knowledge.services`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.knowledge_selectors import store_file_chunks, vector_store_files, vector_store_list
from apps.console.pages.playground import playground_models
from apps.console.pages.support import (
    keyset_page,
    organization_current,
    organization_current_slug,
    organization_filter,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    service_run_apart,
    tenant_object,
)
from apps.knowledge import services as knowledge_services
from apps.knowledge.embedding import run_in_own_loop
from apps.knowledge.models import NAME_MAX, Chunk, KnowledgeFile, VectorStore, VectorStoreFile
from apps.knowledge.reembedding import reembed_progress
from apps.knowledge.retrieval import query_text, stores_search
from apps.knowledge.search import ChunkHit
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal

UPLOAD_FILES_MAX = 20  # files in one upload (one form post)
SEARCH_QUERY_MAX = 2000
SEARCH_RESULTS = 10


class StoreCreateForm(forms.Form):
    organization = forms.IntegerField(label="Organisation")
    name = forms.CharField(label="Name", max_length=NAME_MAX)
    embedding_model = forms.ChoiceField(label="Embedding model", choices=())
    chunk_max_tokens = forms.IntegerField(
        label="Chunk size (tokens)",
        min_value=knowledge_services.CHUNK_TOKENS_MIN,
        max_value=knowledge_services.CHUNK_TOKENS_MAX,
        initial=800,
    )
    chunk_overlap_tokens = forms.IntegerField(
        label="Overlap (tokens)", min_value=0, max_value=knowledge_services.CHUNK_TOKENS_MAX // 2, initial=400
    )

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["embedding_model"].choices = [(name, name) for name in models]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        values = super().clean() or {}
        size, overlap = values.get("chunk_max_tokens"), values.get("chunk_overlap_tokens")
        if size is not None and overlap is not None and overlap > size // 2:
            self.add_error("chunk_overlap_tokens", "At most half of the chunk size.")
        return values


class StoreModelForm(forms.Form):
    embedding_model = forms.ChoiceField(label="Embedding model", choices=())

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["embedding_model"].choices = [(name, name) for name in models]  # type: ignore[attr-defined]


class SearchForm(forms.Form):
    q = forms.CharField(label="Search the store", max_length=SEARCH_QUERY_MAX, strip=True)


def _may(request: HttpRequest, action: str, model: type[Any], organization_id: int) -> bool:
    return page_organizations_allowing(request, action, model).filter(pk=organization_id).exists()


def _form_problems(form: forms.Form) -> str:
    return "Check the form: " + "; ".join(
        f"{form.fields[k].label if k in form.fields else k}: {' '.join(v)}" for k, v in form.errors.items()
    )


# --- The stores -----------------------------------------------------------------------------------------------------


@never_cache
@login_required
@require_GET
def knowledge_view(request: HttpRequest) -> HttpResponse:
    stores, _ = organization_filter(request, VectorStore.objects.restrict(page_principal(request)))
    page = keyset_page(vector_store_list(stores=stores), request=request)
    current = organization_current(request)
    may_create = current is not None and _may(request, "add", VectorStore, current.pk)
    models = playground_models(request, current.pk) if may_create and current is not None else []
    context = {
        "rows": page.rows,
        "page": page,
        "query": query_without(request, "older", "newer"),
        "org": organization_current_slug(request),
        "organization": current,
        "may_create": may_create,
        "models": models,
        "create_form": StoreCreateForm(models=models),
    }
    return render(request, "console/knowledge/list.html", context)


@login_required
@require_POST
def knowledge_store_create_view(request: HttpRequest) -> HttpResponse:
    organization: Organization = require_may_add(request, VectorStore, request.POST.get("organization"))
    form = StoreCreateForm(request.POST, models=playground_models(request, organization.pk))
    if not form.is_valid():
        messages.error(request, _form_problems(form))
        return redirect("console:knowledge")
    values = form.cleaned_data
    # The store's vectors' size is asked of the model, through the gateway, with the store's own key: a model the
    # organisation may not use is refused here, with the gateway's reason.
    store, error = service_run_apart(
        knowledge_services.vector_store_create_probed,
        organization=organization,
        embedding_model=values["embedding_model"],
        name=values["name"],
        chunk_max_tokens=values["chunk_max_tokens"],
        chunk_overlap_tokens=values["chunk_overlap_tokens"],
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
        return redirect("console:knowledge")
    messages.success(request, f"Vector store {store.name} created: add files to it.")
    return redirect("console:knowledge-store", pk=store.pk)


@login_required
@require_POST
def knowledge_store_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    store = tenant_object(VectorStore.objects.select_related("ingest_key"), request=request, pk=pk, action="delete")
    _, error = service_run(
        knowledge_services.vector_store_delete, store=store, actor=request.user, context=page_audit_context(request)
    )
    if error:
        messages.error(request, error)
        return redirect("console:knowledge-store", pk=store.pk)
    messages.success(request, f"Vector store {store.name or store.public_id} deleted with its chunks.")
    return redirect("console:knowledge")


# --- One store ------------------------------------------------------------------------------------------------------


def _search(store: VectorStore, text: str, *, include_flagged: bool) -> tuple[list[ChunkHit], str]:
    """The store's chunks ranked against `text`, best first, or why the search could not run: the search /v1 and
    the REST API run (the query embedded by the store's own model with the store's own key, bounded in time)."""
    try:
        query = query_text(text)
        hits = run_in_own_loop(
            lambda: stores_search(
                stores=[store], query=query, max_num_results=SEARCH_RESULTS, include_flagged=include_flagged
            )
        )
    except DomainRefusal as error:
        return [], str(error)
    return hits, ""


@never_cache
@login_required
@require_GET
def knowledge_store_view(request: HttpRequest, pk: int) -> HttpResponse:
    store = tenant_object(VectorStore.objects.select_related("organization"), request=request, pk=pk)
    principal = page_principal(request)
    files = vector_store_files(store_files=VectorStoreFile.objects.restrict(principal).filter(vector_store=store))
    search = SearchForm(request.GET) if request.GET.get("q") else SearchForm()
    hits: list[ChunkHit] = []
    search_error = ""
    if search.is_bound:
        if search.is_valid():
            hits, search_error = _search(store, search.cleaned_data["q"], include_flagged=True)
        else:
            search_error = " ".join(error for errors in search.errors.values() for error in errors)
    may_change = VectorStore.objects.filter(pk=store.pk).restrict(principal, "change").exists()
    reembedded, to_reembed = reembed_progress(store) if store.reembed_model else (0, 0)
    context = {
        "store": store,
        "files": files,
        "may_change_model": may_change and not store.reembed_model,
        "models": playground_models(request, store.organization_id) if may_change else [],
        "reembedded": reembedded,
        "to_reembed": to_reembed,
        "reembed_percent": 100 * reembedded // to_reembed if to_reembed else 0,
        "in_progress": any(row["status"] == VectorStoreFile.Status.IN_PROGRESS for row in files),
        "search": search,
        "searched": search.is_bound,
        "hits": hits,
        "search_error": search_error,
        "may_upload": _may(request, "add", KnowledgeFile, store.organization_id)
        and _may(request, "add", VectorStoreFile, store.organization_id),
        "may_remove": _may(request, "delete", VectorStoreFile, store.organization_id),
        "may_delete": VectorStore.objects.filter(pk=store.pk).restrict(principal, "delete").exists(),
        "upload_max_bytes": settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES,
        "upload_files_max": UPLOAD_FILES_MAX,
    }
    return render(request, "console/knowledge/store.html", context)


@login_required
@require_POST
def knowledge_store_model_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Change the store's embedding model: re-embedded in the background, searched with the old vectors meanwhile."""
    store = tenant_object(VectorStore.objects.select_related("organization"), request=request, pk=pk, action="change")
    form = StoreModelForm(request.POST, models=playground_models(request, store.organization_id))
    if not form.is_valid():
        messages.error(request, _form_problems(form))
        return redirect("console:knowledge-store", pk=store.pk)
    # The new model's vector size is asked of it through the gateway, with the store's key: apart from the request.
    changed, error = service_run_apart(
        knowledge_services.vector_store_embedding_change,
        store=store,
        embedding_model=form.cleaned_data["embedding_model"],
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    elif changed.reembed_model:
        messages.success(
            request, f"Re-embedding with {changed.reembed_model}: searches use the current vectors until then."
        )
    return redirect("console:knowledge-store", pk=store.pk)


@login_required
@require_POST
def knowledge_upload_view(request: HttpRequest, pk: int) -> HttpResponse:
    store = tenant_object(VectorStore.objects.select_related("organization"), request=request, pk=pk)
    if not (
        _may(request, "add", KnowledgeFile, store.organization_id)
        and _may(request, "add", VectorStoreFile, store.organization_id)
    ):
        raise PermissionDenied("You may not add files to this store.")
    uploads = request.FILES.getlist("files")
    if not uploads:
        messages.error(request, "Choose a file to upload, or drop one onto the upload area.")
        return redirect("console:knowledge-store", pk=store.pk)
    if len(uploads) > UPLOAD_FILES_MAX:
        messages.error(request, f"Upload at most {UPLOAD_FILES_MAX} files at once.")
        return redirect("console:knowledge-store", pk=store.pk)
    added: list[str] = []
    for upload in uploads:
        if upload.size is not None and upload.size > settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES:
            messages.error(request, f"{upload.name}: larger than {settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES} bytes.")
            continue
        _, error = service_run(
            knowledge_services.vector_store_file_upload,
            store=store,
            handle=upload,
            filename=upload.name or "",
            content_type=upload.content_type or "",
            actor=request.user,
            context=page_audit_context(request),
        )
        if error:
            messages.error(request, f"{upload.name}: {error}")
        else:
            added.append(upload.name or "")
    if added:
        messages.success(request, f"Added {', '.join(added)}: ingestion has started.")
    return redirect("console:knowledge-store", pk=store.pk)


@login_required
@require_POST
def knowledge_file_remove_view(request: HttpRequest, pk: int, file_pk: int) -> HttpResponse:
    store = tenant_object(VectorStore.objects.all(), request=request, pk=pk)
    store_file = tenant_object(
        VectorStoreFile.objects.filter(vector_store=store).select_related("file", "vector_store"),
        request=request,
        pk=file_pk,
        action="delete",
    )
    _, error = service_run(
        knowledge_services.vector_store_file_detach,
        store_file=store_file,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{store_file.file.filename} removed from the store with its chunks.")
    return redirect("console:knowledge-store", pk=store.pk)


@never_cache
@login_required
@require_GET
def knowledge_chunks_view(request: HttpRequest, pk: int, file_pk: int) -> HttpResponse:
    store = tenant_object(VectorStore.objects.all(), request=request, pk=pk)
    store_file = tenant_object(
        VectorStoreFile.objects.filter(vector_store=store).select_related("file"), request=request, pk=file_pk
    )
    chunks = store_file_chunks(chunks=Chunk.objects.restrict(page_principal(request)), store_file=store_file)
    context = {
        "store": store,
        "store_file": store_file,
        "chunks": chunks,
        "flagged": sum(1 for chunk in chunks if chunk.flagged),
        "truncated": store_file.chunks_done > len(chunks),
    }
    return render(request, "console/knowledge/chunks.html", context)
