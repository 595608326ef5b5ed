export { TriggerService, type TriggerServiceOptions } from './service.js';
export { DeliveryWorker, type DeliveryTarget } from './worker.js';
export { StoreDeliveryQueue } from './store-queue.js';
export { JetStreamDeliveryBroker, JetStreamSource, Nats, natsMessageEvent } from './jetstream.js';
export { EventTokens } from './event-token.js';
export { parseCloudEvents, toBinaryRequest, eventData, matchesCloudEventTrigger } from './cloudevents.js';
export { validateSchedule } from './cron.js';
export { platformEventType, PLATFORM_EVENT_ALIASES } from './platform-events.js';
export type { DeliveryBroker, DeliveryClaim, DeliverySource } from './source.js';
