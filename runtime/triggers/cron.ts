import { Cron } from 'croner';
import type { PlatformEvent, Trigger } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import type { DeliveryBroker } from './source.js';

/** Checks a schedule the way the cron source will run it (UTC; five fields, or six with seconds). */
export function validateSchedule(schedule: string): void {
  try {
    new Cron(schedule, { timezone: 'UTC', paused: true }).stop();
  } catch (err) {
    throw new GroveError('VALIDATION_FAILED', `"${schedule}" is not a cron schedule: ${(err as Error).message} (e.g. "*/5 * * * *", in UTC)`);
  }
}

/**
 * Fires cron triggers (croner, UTC) on the leader. A firing becomes a delivery whose event id is the
 * trigger and the scheduled minute, so two control planes firing the same moment deliver once.
 * Firings missed while no control plane ran are not made up.
 */
export class CronSource {
  private readonly jobs = new Map<string, Cron>();
  private unwatch: (() => void) | null = null;

  constructor(
    private readonly store: Store,
    private readonly broker: DeliveryBroker,
    private readonly warn: (message: string) => void,
  ) {}

  async start(): Promise<void> {
    this.unwatch = this.store.watch((e) => this.observe(e));
    for (const t of await this.store.listTriggers({ kind: 'cron' })) this.schedule(t);
  }

  stop(): void {
    this.unwatch?.();
    for (const job of this.jobs.values()) job.stop();
    this.jobs.clear();
  }

  private observe(e: PlatformEvent): void {
    const { triggerId } = e.data as { triggerId?: string };
    if (!triggerId) return;
    if (e.type === 'trigger.deleted') {
      this.jobs.get(triggerId)?.stop();
      this.jobs.delete(triggerId);
    } else if (e.type === 'trigger.created' && (e.data.config as { kind?: string } | undefined)?.kind === 'cron') {
      void this.store.getTrigger(triggerId).then((t) => t && this.schedule(t));
    }
  }

  private schedule(trigger: Trigger): void {
    if (trigger.config.kind !== 'cron' || this.jobs.has(trigger.id)) return;
    const schedule = trigger.config.schedule;
    const job = new Cron(schedule, { timezone: 'UTC', protect: true }, (self: Cron) => {
      // The moment the firing was planned for, not when the timer woke (they differ by a few ms).
      const scheduledTime = Math.round(((self.currentRun() ?? new Date()).getTime()) / 1000) * 1000;
      const time = new Date(scheduledTime).toISOString();
      void this.broker
        .enqueue([
          {
            triggerId: trigger.id,
            spaceId: trigger.spaceId,
            appId: trigger.appId,
            event: {
              specversion: '1.0',
              id: `${trigger.id}@${time}`,
              source: `/triggers/${trigger.id}`,
              type: 'dev.grove.cron',
              time,
              datacontenttype: 'application/json',
              data: { cron: schedule, scheduledTime },
            },
          },
        ])
        .catch((err: unknown) => this.warn(`cron trigger ${trigger.id}: could not record the ${time} firing: ${(err as Error).message}`));
    });
    this.jobs.set(trigger.id, job);
  }
}
