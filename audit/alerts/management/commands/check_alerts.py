from typing import Any

from audit.alerts.services import check_alerts
from orchestrator.scheduled import ScheduledCommand


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
