"""The exporter's own metrics: map fill, drops when a map is full, program stats."""

import pytest

from support import WaitingWorkload, unique_comm


@pytest.mark.any_mode
def test_full_map_counts_exactly_what_it_dropped(start_exporter):
    first, second, third = unique_comm("a"), unique_comm("b"), unique_comm("c")
    target = WaitingWorkload(f"{first}=setuid:5", f"{second}=setuid:7", f"{third}=setuid:11")
    exporter = start_exporter({"maps": {"checks_max_entries": 1}, "filters": {"pids": [target.pid]}})
    target.go()
    assert exporter.value("capability_checks_total", comm=first, capability="CAP_SETUID") == 5
    assert exporter.value("capability_exporter_bpf_map_entries", map="checks") == 1
    assert exporter.value("capability_exporter_bpf_map_capacity", map="checks") == 1
    assert exporter.value("capability_exporter_bpf_map_full_drops_total", map="checks") == 7 + 11


def test_program_stats_count_runs_when_enabled(start_exporter, counting_program):
    exporter = start_exporter(None, "--bpf.stats")
    comm = unique_comm()
    before = exporter.value("capability_exporter_bpf_program_runs_total", program=counting_program)
    WaitingWorkload(f"{comm}=setuid:1000").go()
    after = exporter.value("capability_exporter_bpf_program_runs_total", program=counting_program)
    assert exporter.value("capability_exporter_bpf_stats_enabled") == 1
    # Other processes check capabilities too, so at least our 1000 runs were added.
    assert after - before >= 1000
    assert exporter.value("capability_exporter_bpf_program_run_seconds_total", program=counting_program) > 0


@pytest.mark.any_mode
def test_scrape_reports_its_duration_and_map_health(shared_exporter):
    exporter = shared_exporter
    assert exporter.value("capability_exporter_bpf_map_read_success", map="checks") == 1
    assert exporter.value("capability_exporter_bpf_map_read_success", map="drops") == 1
    assert exporter.value("capability_exporter_scrape_duration_seconds") > 0
    assert exporter.series("capability_exporter_build_info")
