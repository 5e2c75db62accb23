# BigQuery, when var.bigquery_source_table names the table the exports query (README, Deploy,
# "Exports computed by BigQuery"). None of this exists otherwise: every resource here iterates
# over local.bigquery, which is empty when the variable is null, and main.tf enables the two
# APIs only then.
#
# process runs one query job per export in this project (its job ID derived from the queryUUID,
# a dry run first, maximum_bytes_billed from var.bigquery_max_bytes_billed) that writes the
# result into a table of the temporary dataset (CREATE TABLE ... AS SELECT), reads that table
# through the Storage Read API in streams, one part per stream, and deletes it after compose.

locals {
  # The source table, parsed: empty without one, so that for_each makes nothing.
  bigquery = var.bigquery_source_table == null ? {} : {
    source = {
      project = split(".", var.bigquery_source_table)[0]
      dataset = split(".", var.bigquery_source_table)[1]
      table   = split(".", var.bigquery_source_table)[2]
    }
  }

  # Dataset IDs take letters, digits and underscores only, so the prefix's hyphens become
  # underscores ("staging-eu" -> "staging_eu_tmp"); prefixes have no underscores, so two prefixes
  # never give one ID.
  bigquery_temp_dataset_id = "${replace(var.prefix, "-", "_")}_tmp"

  # EXPORT_BIGQUERY_TEMP_DATASET: PROJECT.DATASET, taken from the resource so that process waits
  # for the dataset; "" when exports run on DuckDB.
  bigquery_temp_dataset = var.bigquery_source_table == null ? "" : "${var.project_id}.${google_bigquery_dataset.temp["source"].dataset_id}"
}

# One table per running export: its query's result, which the export's parts read. process
# deletes it after compose, or when the export failed; the default expiration removes what a
# crashed instance left. In the source table's location: a query and its destination share one.
resource "google_bigquery_dataset" "temp" {
  #checkov:skip=CKV_GCP_81:Holds only the results of running exports, each deleted after compose and expiring within var.bigquery_temp_table_expiration_hours; they are copies of rows of the source table, whose own encryption is its owners' choice. Google-managed encryption is enough.
  for_each = local.bigquery

  project                     = var.project_id
  dataset_id                  = local.bigquery_temp_dataset_id
  friendly_name               = "${local.display_name}: export results"
  description                 = "Result tables of running BigQuery exports of ${var.bigquery_source_table}, read by the Storage Read API into the exports' parts and deleted after compose (managed by Terraform, deployment ${var.prefix})."
  location                    = var.bigquery_location
  default_table_expiration_ms = var.bigquery_temp_table_expiration_hours * 3600000
  # Only results of running exports: always removable.
  delete_contents_on_destroy = true
  labels                     = local.labels

  depends_on = [google_project_service.this]
}

# --- process's grants ----------------------------------------------------------------------

# Query jobs (the dry run and the CREATE TABLE ... AS SELECT) run in this project and are billed
# to it. Project level: bigquery.jobs.create exists only on projects (a job is no resource IAM
# can be granted on). The role creates jobs and reads the account's own; it reads no data.
resource "google_project_iam_member" "process_runs_bigquery_jobs" {
  for_each = local.bigquery

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.function["process"].member
}

# Storage Read API sessions (bigquery.readsessions.create, getData, update): project level for
# the same reason. Which tables a session may read is still decided by the tables' own IAM,
# here the temporary dataset's.
resource "google_project_iam_member" "process_creates_read_sessions" {
  for_each = local.bigquery

  project = var.project_id
  role    = "roles/bigquery.readSessionUser"
  member  = google_service_account.function["process"].member
}

# Reads the source table: the query job reads it as process. On the source dataset only, in
# whichever project holds it.
resource "google_bigquery_dataset_iam_member" "process_reads_source" {
  for_each = local.bigquery

  project    = each.value.project
  dataset_id = each.value.dataset
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.function["process"].member
}

# Creates each export's result table (the CTAS), reads it through the Storage Read API and
# deletes it after compose: only in the temporary dataset.
resource "google_bigquery_dataset_iam_member" "process_writes_results" {
  for_each = local.bigquery

  project    = var.project_id
  dataset_id = google_bigquery_dataset.temp[each.key].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.function["process"].member
}
