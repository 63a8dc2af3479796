"""The demo application the console manages: the seeds' document-management SaaS (tenants, users,
folders, documents, document_versions) as an Alembic project. Tables are created without a schema:
the console puts them where the tenant lives with `SET LOCAL search_path` (schema tenants), by the
database it connects to (database tenants), or in the shared schema (RLS tenants). Every table
carries `tenant_id`, so the same revisions serve all three strategies."""
