# Monitoring from what the code already writes: one JSON log line per event on stdout, which
# Cloud Run turns into jsonPayload (dataset_export.logs). Log-based metrics count and measure
# exports and webhook deliveries; Pub/Sub and Cloud Run metrics show the queues and the API.

locals {
  service_filter = {
    for k, name in local.function_names : k => "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${name}\""
  }
  functions_log_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${join("\" OR \"", values(local.function_names))}\")"

  user_metric = "logging.googleapis.com/user"

  # Subscriptions whose messages are work: those that dead-letter (as opposed to ticks and
  # dead letters themselves).
  work_subscriptions       = "one_of(${join(", ", [for key, s in google_pubsub_subscription.push : "\"${s.name}\"" if local.push_subscriptions[key].max_delivery_attempts != null])})"
  all_subscriptions        = join(", ", [for s in values(google_pubsub_subscription.push) : "\"${s.name}\""])
  dead_letter_subscription = google_pubsub_subscription.push["dead-letter-process"]

  # Log-based metric names.
  metric_names = {
    exports_finished   = "${var.prefix}/exports_finished"
    export_duration    = "${var.prefix}/export_duration"
    export_rows        = "${var.prefix}/export_rows"
    export_size        = "${var.prefix}/export_size"
    webhook_deliveries = "${var.prefix}/webhook_deliveries"
  }
}

# --- log-based metrics ---------------------------------------------------------------------

# "export succeeded: N rows, M bytes" (INFO) and "export failed: <reason>" (ERROR, errorCode).
resource "google_logging_metric" "exports_finished" {
  project     = var.project_id
  name        = local.metric_names.exports_finished
  description = "Exports that finished, by outcome (succeeded, failed) and error code"
  filter      = "${local.service_filter.process} AND jsonPayload.message=~\"^export (succeeded|failed)\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Exports finished"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "succeeded or failed"
    }
    labels {
      key         = "error_code"
      value_type  = "STRING"
      description = "Why a failed export failed (empty for successes)"
    }
  }

  label_extractors = {
    outcome    = "REGEXP_EXTRACT(jsonPayload.message, \"^export (succeeded|failed)\")"
    error_code = "EXTRACT(jsonPayload.errorCode)"
  }
}

# durationMs of each successful export (query, gzip and upload).
resource "google_logging_metric" "export_duration" {
  project         = var.project_id
  name            = local.metric_names.export_duration
  description     = "Time from start to finished upload of successful exports"
  filter          = "${local.service_filter.process} AND jsonPayload.message=~\"^export succeeded\""
  value_extractor = "EXTRACT(jsonPayload.durationMs)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "Export duration"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20 # 100 ms ... 29 h
      growth_factor      = 2
      scale              = 100
    }
  }
}

# numberRows of each successful export.
resource "google_logging_metric" "export_rows" {
  project         = var.project_id
  name            = local.metric_names.export_rows
  description     = "Rows written by successful exports"
  filter          = "${local.service_filter.process} AND jsonPayload.message=~\"^export succeeded\""
  value_extractor = "EXTRACT(jsonPayload.numberRows)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "Rows per export"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 16 # 1 ... 4^16 (4.3 billion) rows
      growth_factor      = 4
      scale              = 1
    }
  }
}

# sizeBytes of each successful export (the gzip file).
resource "google_logging_metric" "export_size" {
  project         = var.project_id
  name            = local.metric_names.export_size
  description     = "Size of the gzip files of successful exports"
  filter          = "${local.service_filter.process} AND jsonPayload.message=~\"^export succeeded\""
  value_extractor = "EXTRACT(jsonPayload.sizeBytes)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "By"
    display_name = "Export file size"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 16 # 1 KiB ... 4 TiB
      growth_factor      = 4
      scale              = 1024
    }
  }
}

# "webhook delivered: ..." (INFO) and "webhook delivery failed: ..." (WARNING), with
# deliveryState retrying (another attempt is scheduled) or failed (the schedule is exhausted).
resource "google_logging_metric" "webhook_deliveries" {
  project     = var.project_id
  name        = local.metric_names.webhook_deliveries
  description = "Webhook delivery attempts by outcome and the delivery's resulting state"
  filter      = "${local.service_filter.notify} AND jsonPayload.message=~\"^webhook (delivered|delivery failed)\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Webhook delivery attempts"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "delivered or delivery failed"
    }
    labels {
      key         = "delivery_state"
      value_type  = "STRING"
      description = "delivered, retrying or failed"
    }
  }

  label_extractors = {
    outcome        = "REGEXP_EXTRACT(jsonPayload.message, \"^webhook (delivered|delivery failed)\")"
    delivery_state = "EXTRACT(jsonPayload.deliveryState)"
  }
}

# --- dashboard -----------------------------------------------------------------------------

locals {
  exports_finished   = "metric.type=\"${local.user_metric}/${google_logging_metric.exports_finished.name}\" AND resource.type=\"cloud_run_revision\""
  webhook_deliveries = "metric.type=\"${local.user_metric}/${google_logging_metric.webhook_deliveries.name}\" AND resource.type=\"cloud_run_revision\""

  percentile_datasets = {
    for m in ["export_duration", "export_rows"] : m => [
      for p in ["50", "95", "99"] : {
        legendTemplate = "p${p}"
        plotType       = "LINE"
        timeSeriesQuery = {
          timeSeriesFilter = {
            filter = "metric.type=\"${local.user_metric}/${local.metric_names[m]}\" AND resource.type=\"cloud_run_revision\""
            aggregation = {
              alignmentPeriod    = "300s"
              perSeriesAligner   = "ALIGN_DELTA"
              crossSeriesReducer = "REDUCE_PERCENTILE_${p}"
            }
          }
        }
      }
    ]
  }

  dashboard_tiles = [
    {
      title = "Exports finished (per 5 min)"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_BAR"
          legendTemplate = "$${metric.labels.outcome}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = local.exports_finished
              aggregation = {
                alignmentPeriod    = "300s"
                perSeriesAligner   = "ALIGN_SUM"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.outcome"]
              }
            }
          }
        }]
      }
    },
    {
      title = "Export failures by error code"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_BAR"
          legendTemplate = "$${metric.labels.error_code}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "${local.exports_finished} AND metric.label.outcome=\"failed\""
              aggregation = {
                alignmentPeriod    = "300s"
                perSeriesAligner   = "ALIGN_SUM"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.error_code"]
              }
            }
          }
        }]
      }
    },
    {
      title   = "Export duration (ms)"
      xyChart = { dataSets = local.percentile_datasets.export_duration }
    },
    {
      title   = "Rows per export"
      xyChart = { dataSets = local.percentile_datasets.export_rows }
    },
    {
      title = "Webhook attempts by resulting delivery state"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_BAR"
          legendTemplate = "$${metric.labels.delivery_state}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = local.webhook_deliveries
              aggregation = {
                alignmentPeriod    = "300s"
                perSeriesAligner   = "ALIGN_SUM"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.delivery_state"]
              }
            }
          }
        }]
      }
    },
    {
      title = "API requests by response class (per second)"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_AREA"
          legendTemplate = "$${metric.labels.response_code_class}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"run.googleapis.com/request_count\" AND ${local.service_filter.submit}"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_RATE"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.response_code_class"]
              }
            }
          }
        }]
      }
    },
    {
      title = "API latency p95 (ms)"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"run.googleapis.com/request_latencies\" AND ${local.service_filter.submit}"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_DELTA"
                crossSeriesReducer = "REDUCE_PERCENTILE_95"
              }
            }
          }
        }]
      }
    },
    {
      title = "Undelivered messages by subscription"
      xyChart = {
        dataSets = [{
          plotType       = "LINE"
          legendTemplate = "$${resource.labels.subscription_id}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=one_of(${local.all_subscriptions})"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_MAX"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["resource.label.subscription_id"]
              }
            }
          }
        }]
      }
    },
    {
      title = "Oldest unacked message age (s)"
      xyChart = {
        dataSets = [{
          plotType       = "LINE"
          legendTemplate = "$${resource.labels.subscription_id}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=one_of(${local.all_subscriptions})"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_MAX"
                crossSeriesReducer = "REDUCE_MAX"
                groupByFields      = ["resource.label.subscription_id"]
              }
            }
          }
        }]
      }
    },
    {
      title = "Messages dead-lettered (per 5 min)"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_BAR"
          legendTemplate = "$${resource.labels.subscription_id}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=${local.work_subscriptions}"
              aggregation = {
                alignmentPeriod    = "300s"
                perSeriesAligner   = "ALIGN_DELTA"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["resource.label.subscription_id"]
              }
            }
          }
        }]
      }
    },
    {
      title = "Export worker instances"
      xyChart = {
        dataSets = [{
          plotType       = "STACKED_AREA"
          legendTemplate = "$${metric.labels.state}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"run.googleapis.com/container/instance_count\" AND ${local.service_filter.process}"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_MAX"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.state"]
              }
            }
          }
        }]
      }
    },
    {
      title = "Export worker memory utilization p99"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"run.googleapis.com/container/memory/utilizations\" AND ${local.service_filter.process}"
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_DELTA"
                crossSeriesReducer = "REDUCE_PERCENTILE_99"
              }
            }
          }
        }]
      }
    },
  ]
}

locals {
  dashboard_name = local.display_name
}

resource "google_monitoring_dashboard" "exports" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = local.dashboard_name
    labels      = { dataset-export = var.prefix }
    mosaicLayout = {
      columns = 48
      tiles = concat(
        [for i, tile in local.dashboard_tiles : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = tile
        }],
        [{
          xPos   = 0
          yPos   = ceil(length(local.dashboard_tiles) / 2) * 16
          width  = 48
          height = 20
          widget = {
            title = "Warnings and errors of the three functions"
            logsPanel = {
              filter        = "${local.functions_log_filter} AND severity>=WARNING"
              resourceNames = ["projects/${var.project_id}"]
            }
          }
        }]
      )
    }
  })

  depends_on = [google_project_service.this]
}

# --- alert policies ------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "${local.display_name}: messages dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "A request, part or ready message was moved to ${google_pubsub_topic.dead_letter.name}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=${local.work_subscriptions}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "Dead letters are not being processed (${local.dead_letter_subscription.name} backlog)"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${local.dead_letter_subscription.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "900s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MIN"
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${local.display_name}: messages dead-lettered"
    content   = <<-EOT
      A message exhausted its Pub/Sub delivery attempts (${join(", ", [for key, s in local.push_subscriptions : "${var.prefix}-${key}: ${s.max_delivery_attempts}" if s.max_delivery_attempts != null])})
      and went to **${google_pubsub_topic.dead_letter.name}**. For an export request, or one
      part of an export, the process function's /dead-letter handler marks the export `failed` with error code
      `dead_lettered`, so the customer's status call says why; a ready message is only logged
      (notify keeps its own retry schedule and the file stays downloadable).

      1. Logs Explorer: `${local.service_filter.process} AND severity>=WARNING` around the alert
         time, and the export's `queryUUID`.
      2. A backlog on ${local.dead_letter_subscription.name} means the /dead-letter handler itself fails.
      3. After a fix, replay from the dead-letter topic (it keeps 7 days of messages): seek a
         fresh subscription, or ask the customer to resubmit.
    EOT
  }
}

resource "google_monitoring_alert_policy" "export_failure_rate" {
  project               = var.project_id
  display_name          = "${local.display_name}: export failure rate"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "More than ${var.alert_export_failure_ratio * 100}% of exports failed over 30 minutes"
    condition_threshold {
      filter             = "${local.exports_finished} AND metric.label.outcome=\"failed\""
      denominator_filter = local.exports_finished
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_export_failure_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "1800s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "1800s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${local.display_name}: export failure rate above threshold"
    content   = <<-EOT
      Many exports ended in `failed`. The dashboard "${local.dashboard_name}" breaks failures down by
      error code; the process function logs each one as `export failed: <reason>` with
      `errorCode` and `queryUUID`:
      `${local.service_filter.process} AND jsonPayload.message=~"^export failed"`.
      `dead_lettered` and `too_many_attempts` point at infrastructure (memory, timeouts, the
      dataset); query errors point at the dataset no longer matching the catalog.
    EOT
  }
}

resource "google_monitoring_alert_policy" "oldest_unacked_message" {
  project               = var.project_id
  display_name          = "${local.display_name}: work waiting in Pub/Sub"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Oldest unacknowledged request, part or ready message older than ${var.alert_oldest_unacked_seconds} s"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=${local.work_subscriptions}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_unacked_seconds
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${local.display_name}: work waiting in Pub/Sub"
    content   = <<-EOT
      Messages are not being acknowledged: exports or webhooks are late. Likely causes: the
      function at its max instances (dashboard: "Export worker instances"), pushes rejected
      (403: the push service account lost run.invoker; 5xx: the function fails at start-up,
      e.g. a missing setting or secret), or exports hitting the ${var.process_function.timeout_seconds} s timeout.
      Logs: `${local.functions_log_filter} AND severity>=WARNING`.
    EOT
  }
}
