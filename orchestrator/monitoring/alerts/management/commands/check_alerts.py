from typing import Any

from core.scheduled import ScheduledCommand
from orchestrator.monitoring.alerts.services import check_alerts


class Command(ScheduledCommand):
    help = (
        "Evaluate the alert rules (admin: Alerts), open and resolve incidents, and send "
        "the notices that are due, retrying failed deliveries. Run every minute, or --loop."
    )
    lock_name = "check_alerts"
    default_interval = 60

    def run_once(self, **options: Any) -> None:
        summary = check_alerts(stop=self.stop)
        self.stdout.write(str(summary))
