// The active-learning loop on Azure: `azd up` provisions this and deploys the one Python package to
// four Flex Consumption function apps, one stage each (AL_STAGES). See docs/deploy.md.
//
// Identity: one user-assigned managed identity per app (issue 20, item 6), each with the data-plane roles its own
// stage needs and nothing another stage needs, at the narrowest scope the API allows: a container or a queue on
// the loop's account (loopBlobGrants, loopQueueGrants below), a secret in Key Vault, the ADX database, the Azure
// ML workspace, the app's own host storage account. docs/deploy.md has the table. No storage key, connection
// string with a secret, or token is an app setting: the loop's storage accounts refuse shared keys and the
// GitHub and Label Studio tokens are Key Vault references.
//
// Network and logs (issue 20, item 7): only the collector is open to the internet; the other apps deny inbound
// traffic but for what they must receive (functionapp.bicep). Storage, Key Vault and ADX keep their public
// endpoints because the Flex Consumption apps run without virtual network integration (each reason is in
// infra/checkov-baseline.yaml). Every resource that has diagnostic settings sends its logs and metrics to the
// Log Analytics workspace.
//
// Labeling: Label Studio (open source) on Azure Container Apps with its database on Azure Database for
// PostgreSQL, and a dedicated labeling storage account that holds only the items under labeling; the one
// account with shared-key access, because Label Studio's Azure storage signs in with the account key only.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource (must offer Flex Consumption and Azure Data Explorer).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Resource group to create; default rg-<environmentName>.')
param resourceGroupName string = ''

// --- the loop ---------------------------------------------------------------------------------------
@description('The model whose serving version the loop follows (AL_MODEL_NAME).')
param modelName string = 'classifier'
@description('Selection strategy (AL_STRATEGY): calibration_switch (default), gradient_spaced, spaced_margin, distance_margin, pair_capped_margin, badge, k_center, typiclust, margin, least_confidence, entropy, random (cluster_margin needs SciPy, which the apps do not install: the suite only).')
param strategy string = 'calibration_switch'
param batchSize int = 100
@description('Only predictions scored this many hours ago or later are candidates (AL_WINDOW_HOURS).')
param windowHours string = '168'
@description('NCRONTAB with seconds for the selection timer (AL_SELECTION_SCHEDULE); hourly by default.')
param selectionSchedule string = '0 0 * * * *'
@description('At most this many items sent to labeling per UTC day; 0: no cap.')
param labelsPerDay int = 0
@description('At most this many items sent to labeling ever; 0: no cap.')
param labelsTotal int = 0
@description('Stop selecting when the batch\'s mean uncertainty falls under this (e.g. \'0.05\'); empty: never.')
param stopUncertaintyBelow string = ''
@description('New labels that trigger a retraining request (AL_RETRAIN_THRESHOLD).')
param retrainThreshold int = 100
@description('Comma-separated classes a label must be one of; empty: the serving model version\'s classes.')
param classNames string = ''
param gateMetric string = 'accuracy'
@description('How much worse than the serving model a candidate may be and still deploy (AL_GATE_TOLERANCE).')
param gateTolerance string = '0.0'

// --- Azure Data Explorer ----------------------------------------------------------------------------
param adxDatabaseName string = 'activelearning'
param adxSkuName string = 'Dev(No SLA)_Standard_E2a_v4'
param adxSkuTier string = 'Basic'
@description('Ingest the collector\'s batches by streaming instead of queued ingestion (AL_ADX_STREAMING).')
param adxStreaming bool = false

// --- GitHub (the training workflow) -----------------------------------------------------------------
@description('owner/name of the repository holding the training workflow (AL_GITHUB_REPOSITORY).')
param githubRepository string = ''
param githubWorkflow string = 'train.yml'
param githubRef string = 'main'
@secure()
@description('GitHub token with actions:write; stored in Key Vault (secret github-token), the only way it reaches the dispatch app, whose role is on that secret. Empty: no secret, and the dispatch app refuses to start until a provision has one.')
param githubToken string = ''
@description('When that token expires (ISO 8601, e.g. 2026-12-31T00:00:00Z): the secret\'s expiry. Empty: a year after the provision.')
param githubTokenExpiresOn string = ''

// --- the existing Azure ML workspace ----------------------------------------------------------------
@description('Subscription of the Azure ML workspace; default this subscription.')
param amlSubscriptionId string = subscription().subscriptionId
@description('Resource group of the existing Azure ML workspace; empty with amlWorkspace: no Azure ML wiring.')
param amlResourceGroup string = ''
param amlWorkspace string = ''
@description('Managed online endpoint serving the model, and the deployment the loop updates.')
param amlEndpoint string = ''
param amlDeployment string = ''
@description('VM size and node limit of the training compute cluster created in the workspace (min nodes 0).')
param amlComputeVmSize string = 'Standard_DS3_v2'
param amlComputeMaxNodes int = 1

// One name each, in one place: training/job.yml mounts `azureml://datastores/<amlItemsDatastore>/paths/` and
// runs on `azureml:<amlTrainingCompute>`; tests/integration/test_infra.py holds the two files to each other.
// Not parameters on purpose: a different value here would not change the job spec.
var amlItemsDatastore = 'al_items'
var amlTrainingCompute = 'al-train-cpu'

// --- where labeling exports are dropped (historical Azure ML exports, Label Studio JSON) ---------------
@description('Storage account the label app\'s blob trigger watches for exports (e.g. the workspace\'s default blob store that holds historical Azure ML Data Labeling exports); empty: the loop\'s account.')
param exportsStorageAccountName string = ''
param exportsStorageResourceGroup string = ''
@description('Subscription of that account; empty: the Azure ML workspace\'s.')
param exportsStorageSubscriptionId string = ''
@description('An Event Grid system topic that already exists on the exports account (an account has at most one); empty: create one.')
param exportsSystemTopicName string = ''
@description('Container and folder the label stage\'s blob trigger watches (AL_EXPORTS_CONTAINER, AL_EXPORTS_PREFIX).')
param exportsContainer string = 'exports'
// Never empty (issue 20, item 4): the trigger and the Event Grid filter must not cover a whole container, since the
// label stage quarantines (copies, then deletes) whatever it cannot read there.
@minLength(1)
@description('Folder under the exports container that holds the exports, ending with \'/\'; never the whole container.')
param exportsPrefix string = 'labeling/exports/'

// --- labeling: Label Studio on Container Apps, PostgreSQL, the labeling account ---------------------
@description('Label Studio\'s container image: HumanSignal\'s official one, pinned (the loop was checked against 1.23.2).')
param labelStudioImage string = 'heartexlabs/label-studio:1.23.2'
@description('The model\'s Label Studio project (AL_LABEL_STUDIO_PROJECT_ID): printed by `al labeling setup`, which the postdeploy hook runs once and keeps as azd env LABEL_STUDIO_PROJECT_ID; empty until then, and the selector and label apps refuse to start without it.')
param labelStudioProjectId string = ''
@description('Per-request timeout of the apps\' Label Studio client (AL_LABEL_STUDIO_TIMEOUT_SECONDS).')
param labelStudioTimeoutSeconds string = '10'
@description('NCRONTAB with seconds of the label app\'s catch-up timer (AL_LABEL_SYNC_SCHEDULE): Label Studio sends each webhook once and never retries it. Every minute by default.')
param labelSyncSchedule string = '0 * * * * *'
@description('The loop\'s service user in Label Studio (an e-mail address, LABEL_STUDIO_USERNAME): the first user, the one you sign in as first.')
param labelStudioUsername string = 'al-service@labelstudio.local'
@description('vCPU and memory of the Label Studio replica (a Consumption profile pair), and its replica limit.')
param labelStudioCpu string = '1.0'
param labelStudioMemory string = '2Gi'
param labelStudioMaxReplicas int = 1
@description('PostgreSQL flexible server for Label Studio: SKU, major version, storage, administrator login.')
param postgresSkuName string = 'Standard_B1ms'
param postgresSkuTier string = 'Burstable'
param postgresVersion string = '16'
param postgresStorageSizeGB int = 32
param postgresAdminLogin string = 'labelstudio'
@description('Container on the labeling account the selector copies items into (AL_LABELING_CONTAINER).')
param labelingContainer string = 'labeling-input'
@description('Days after their last modification when items in the labeling container are deleted.')
param labelingRetentionDays int = 30

// Label Studio's secrets, generated at deployment and stored in Key Vault (never an output or an app setting in
// clear). The defaults are 122 random bits each (newGuid() is a random version-4 GUID; uniqueString() would be a
// hash of known inputs, not a secret). Under azd, main.parameters.json passes `secretOrRandomPassword` values
// instead, which read the secret back from the vault on every later provision: a re-deployment must not rotate
// them, since Label Studio applies the user's password and token only when it first creates the user. Outside
// azd, pass the vault's values back the same way.
@secure()
@description('Label Studio\'s Django SECRET_KEY (Key Vault secret label-studio-secret-key).')
param labelStudioSecretKey string = replace('${newGuid()}${newGuid()}', '-', '')
@secure()
@description('PostgreSQL administrator password (Key Vault secret label-studio-db-password).')
param postgresAdminPassword string = newGuid()
@secure()
@description('Password of the service user (Key Vault secret label-studio-password).')
param labelStudioPassword string = newGuid()
@secure()
@description('API token of the service user (Key Vault secret label-studio-token; the apps\' AL_LABEL_STUDIO_TOKEN).')
param labelStudioToken string = newGuid()

// --- inbound to the apps (only the collector is public) --------------------------------------------------
@description('Comma-separated IPv4 addresses or CIDR ranges (your own) allowed to call the selector, label and dispatch apps\' admin routes (replay, stats, sync, retrain status); empty: none.')
param adminIpRanges string = ''

// --- who deploys ------------------------------------------------------------------------------------
@description('Object id of the signed-in deployer (azd sets AZURE_PRINCIPAL_ID): Key Vault Secrets User, to read the generated secrets back; empty: no grant.')
param principalId string = ''
@allowed(['User', 'ServicePrincipal'])
param principalType string = 'User'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var useAml = !empty(amlWorkspace) && !empty(amlResourceGroup)
var externalExports = !empty(exportsStorageAccountName)
var exportsSubscriptionId = !externalExports ? subscription().subscriptionId : (empty(exportsStorageSubscriptionId) ? amlSubscriptionId : exportsStorageSubscriptionId)
var exportsResourceGroup = externalExports ? exportsStorageResourceGroup : rg.name

// Every container and queue the code names (Settings defaults and constants in shared/); the tests
// (tests/integration/test_infra.py) hold this list to the code.
var containerNames = {
  items: 'items' // shared/services/collect.py ITEMS_CONTAINER, AL_ITEMS_CONTAINER
  landing: 'landing' // AL_LANDING_CONTAINER
  // (AL_LABELING_CONTAINER is on the labeling account, not here: param labelingContainer)
  exports: 'exports' // AL_EXPORTS_CONTAINER (in this account unless exportsStorageAccountName is set)
  quarantine: 'exports-quarantine' // AL_QUARANTINE_CONTAINER
  retrainState: 'retrain-state' // AL_RETRAIN_STATE_CONTAINER
  selectionLock: 'selection-lock' // AL_SELECTION_LOCK_CONTAINER
  models: 'models' // shared/model/registry.py CONTAINER
  outcomes: 'retrain-outcomes' // shared/services/retrain.py OUTCOMES_CONTAINER
  manifests: 'manifests' // shared/services/retrain.py MANIFESTS_CONTAINER
}
var queueNames = {
  retrain: 'retrain-requests' // AL_RETRAIN_QUEUE
  // The Functions host's poison queues on this account, created here so that their roles can be queue-scoped:
  retrainPoison: 'retrain-requests-poison' // the dispatch app's queue trigger moves a failing message here
  blobTriggerPoison: 'webjobs-blobtrigger-poison' // the label app's blob trigger (exports in this account)
}
// Pycep 0.5, Checkov's Bicep parser, knows no lambdas (`map(items(x), c => c.value)`): for-expressions instead.
var loopContainers = [for c in items(containerNames): c.value]
var loopQueues = [for q in items(queueNames): q.value]

// The four apps: azd service name, stage, and the Flex Consumption package container of each (in the app's own
// host storage account, functionapp.bicep). Their order is the order of appIdentities and functionApps.
var apps = [
  { service: 'collector', stage: 'scoring_collector' }
  { service: 'selector', stage: 'selector_timer' }
  { service: 'labels', stage: 'label_export_trigger' }
  { service: 'dispatch', stage: 'github_dispatch' }
]
var deploymentContainers = [for app in apps: 'deploy-${app.service}']

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

// One identity per app: id-al-collector-…, id-al-selector-…, id-al-labels-…, id-al-dispatch-….
module appIdentities 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = [for app in apps: {
  name: 'identity-${app.service}'
  scope: rg
  params: {
    name: 'id-al-${app.service}-${resourceToken}'
    location: location
    tags: union(tags, { 'al-stage': app.stage })
  }
}]

// Each app's identity by its service name (apps order: collector 0, selector 1, labels 2, dispatch 3).
var principals = {
  collector: appIdentities[0].outputs.principalId
  selector: appIdentities[1].outputs.principalId
  labels: appIdentities[2].outputs.principalId
  dispatch: appIdentities[3].outputs.principalId
}
var clientIds = {
  collector: appIdentities[0].outputs.clientId
  selector: appIdentities[1].outputs.clientId
  labels: appIdentities[2].outputs.clientId
  dispatch: appIdentities[3].outputs.clientId
}

// The training compute cluster's own identity: it only reads the loop's items and manifests (Storage Blob
// Data Reader), nothing the apps' identity may do.
module computeIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = if (useAml) {
  name: 'computeIdentity'
  scope: rg
  params: {
    name: 'id-al-train-${resourceToken}'
    location: location
    tags: tags
  }
}

// What the training workflow signs in as (GitHub OIDC): its client id is the repository secret
// AZURE_CLIENT_ID of docs/deploy.md step 8; AzureML Data Scientist on the workspace (aml-access.bicep).
module githubIdentity 'modules/github-identity.bicep' = if (useAml && !empty(githubRepository)) {
  name: 'githubIdentity'
  scope: rg
  params: {
    name: 'id-al-github-${resourceToken}'
    location: location
    tags: tags
    repository: githubRepository
    ref: githubRef
  }
}

// Label Studio's own identity: it reads its four Key Vault secrets (keyvault.bicep), nothing the apps may do.
module labelStudioIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'labelStudioIdentity'
  scope: rg
  params: {
    name: 'id-al-ls-${resourceToken}'
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: 'log-al-${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
    // The workspace's own audit (who queried what) into itself.
    diagnosticSettings: [{ useThisWorkspace: true }]
  }
}

module appInsights 'modules/appinsights.bicep' = {
  name: 'appInsights'
  scope: rg
  params: {
    name: 'appi-al-${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    appPrincipalIds: [principals.collector, principals.selector, principals.labels, principals.dispatch]
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stal${resourceToken}'
    location: location
    tags: tags
    containers: loopContainers
    queues: loopQueues
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module aml 'modules/aml-access.bicep' = if (useAml) {
  name: 'amlAccess'
  scope: resourceGroup(amlSubscriptionId, useAml ? amlResourceGroup : rg.name)
  params: {
    workspaceName: amlWorkspace
    dispatchPrincipalId: principals.dispatch
    storageAccountName: storage.outputs.name
    itemsContainer: containerNames.items
    itemsDatastoreName: amlItemsDatastore
    computeName: amlTrainingCompute
    computeVmSize: amlComputeVmSize
    computeMaxNodes: amlComputeMaxNodes
    computeIdentityId: useAml ? computeIdentity.outputs.resourceId : ''
    workflowPrincipalId: useAml && !empty(githubRepository) ? githubIdentity.outputs.principalId : ''
  }
}

// --- who may do what on the loop's account: one grant per line, container or queue scope --------------------
// Read from the code: shared/backends.py (which port reads which container setting) and functions/*/wiring.py
// (which stage takes which port). BlobObjectStore creates a container on first use, which Storage Blob Data
// Contributor and Owner allow on their own container; QueueRetrainRequests creates the retrain queue and the
// retrain-state container on first use, hence Queue Data Contributor (not Message Sender: no queues/write).
var loopBlobGrants = [
  { app: 'collector', role: 'Storage Blob Data Contributor', container: containerNames.items } // CollectService: inline items
  { app: 'collector', role: 'Storage Blob Data Contributor', container: containerNames.landing } // IngestService: landed batches
  { app: 'selector', role: 'Storage Blob Data Reader', container: containerNames.items } // hand-off: reads the item it copies
  { app: 'selector', role: 'Storage Blob Data Contributor', container: containerNames.selectionLock } // BlobLeaseLock
  { app: 'labels', role: 'Storage Blob Data Contributor', container: containerNames.retrainState } // watermarks
  { app: 'labels', role: 'Storage Blob Data Contributor', container: containerNames.quarantine } // Label Studio refusal reports
  { app: 'dispatch', role: 'Storage Blob Data Contributor', container: containerNames.manifests } // prepare: the manifest
  { app: 'dispatch', role: 'Storage Blob Data Contributor', container: containerNames.outcomes } // the retrain outcome
]
// The exports container when it is this account's (else exports-roles.bicep grants the same in the other account).
var loopExportsGrants = [
  { app: 'labels', role: 'Storage Blob Data Owner', container: containerNames.exports } // the blob trigger; reports, moves
]
var loopQueueGrants = [
  { app: 'labels', role: 'Storage Queue Data Contributor', queue: queueNames.retrain } // sends (and creates) requests
  { app: 'dispatch', role: 'Storage Queue Data Reader', queue: queueNames.retrain } // queue trigger: peek, length
  { app: 'dispatch', role: 'Storage Queue Data Message Processor', queue: queueNames.retrain } // receive, delete
  { app: 'dispatch', role: 'Storage Queue Data Contributor', queue: queueNames.retrainPoison } // the host moves poison here
]
var loopExportsQueueGrants = [
  { app: 'labels', role: 'Storage Queue Data Contributor', queue: queueNames.blobTriggerPoison } // the blob trigger's poison
]

module storageRoles 'modules/storage-roles.bicep' = {
  name: 'storageRoles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    principals: principals
    blobGrants: concat(loopBlobGrants, externalExports ? [] : loopExportsGrants)
    queueGrants: concat(loopQueueGrants, externalExports ? [] : loopExportsQueueGrants)
    workspacePrincipalId: useAml ? aml.outputs.workspacePrincipalId : ''
    computePrincipalId: useAml ? computeIdentity.outputs.principalId : ''
    trainingContainers: [containerNames.items, containerNames.manifests]
  }
}

// Exports in another account (e.g. the workspace's default blob store): the label app's roles there, and the
// quarantine container next to the exports (reports, quarantine and replay stay in the watched account).
module exportsRoles 'modules/exports-roles.bicep' = if (externalExports) {
  name: 'exportsRoles'
  scope: resourceGroup(exportsSubscriptionId, exportsResourceGroup)
  params: {
    storageAccountName: exportsStorageAccountName
    labelsPrincipalId: principals.labels
    exportsContainer: exportsContainer
    quarantineContainer: containerNames.quarantine
    poisonQueue: queueNames.blobTriggerPoison
  }
}

// The Event Grid system topic on the exports account. Flex Consumption runs the Blob trigger only with the
// Event Grid source; the webhook subscription to the label app's blobs extension is declared in
// infra/eventgrid/exports-subscription.bicep and deployed by the postdeploy hook (azure.yaml), once the
// code is deployed and the host has created the blobs_extension key.
module exportsTopic 'modules/exports-topic.bicep' = {
  name: 'exportsTopic'
  scope: resourceGroup(exportsSubscriptionId, exportsResourceGroup)
  params: {
    storageAccountName: externalExports ? exportsStorageAccountName : storage.outputs.name
    systemTopicName: 'evgt-al-exports-${resourceToken}'
    existingSystemTopicName: exportsSystemTopicName
    tags: tags
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module adx 'modules/adx.bicep' = {
  name: 'adx'
  scope: rg
  params: {
    clusterName: 'adxal${resourceToken}'
    databaseName: adxDatabaseName
    location: location
    tags: tags
    skuName: adxSkuName
    skuTier: adxSkuTier
    appClientIds: [clientIds.collector, clientIds.selector, clientIds.labels, clientIds.dispatch]
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: 'kv-al-${resourceToken}'
    location: location
    tags: tags
    // Secret scope: the Label Studio token for the selector and label apps, the GitHub token for the dispatch app.
    labelStudioTokenReaders: [principals.selector, principals.labels]
    githubTokenReader: principals.dispatch
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
    githubToken: githubToken
    githubTokenExpiresOn: githubTokenExpiresOn
    labelStudioSecretKey: labelStudioSecretKey
    postgresAdminPassword: postgresAdminPassword
    labelStudioPassword: labelStudioPassword
    labelStudioToken: labelStudioToken
    labelStudioPrincipalId: labelStudioIdentity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

// --- labeling: Label Studio, its database, the labeling account -------------------------------------
module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  scope: rg
  params: {
    name: 'psql-al-${resourceToken}'
    location: location
    tags: tags
    administratorLogin: postgresAdminLogin
    postgresAdminPassword: postgresAdminPassword
    databaseName: 'labelstudio'
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    serverVersion: postgresVersion
    storageSizeGB: postgresStorageSizeGB
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module labelStudio 'modules/labelstudio.bicep' = {
  name: 'labelStudio'
  scope: rg
  params: {
    name: 'ca-al-ls-${resourceToken}'
    environmentName: 'cae-al-${resourceToken}'
    location: location
    tags: tags
    image: labelStudioImage
    identityId: labelStudioIdentity.outputs.resourceId
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
    secretUris: keyVault.outputs.labelStudioSecretUris
    postgresHost: postgres.outputs.host
    postgresDatabase: postgres.outputs.databaseName
    postgresUser: postgres.outputs.administratorLogin
    username: labelStudioUsername
    cpu: labelStudioCpu
    memory: labelStudioMemory
    maxReplicas: labelStudioMaxReplicas
  }
  // (after keyVault through secretUris: its identity can read the secrets before the first revision starts)
}

// The selector writes the items under labeling here (its own identity: Storage Blob Data Contributor on the
// container); Label Studio reads them with the account key, which goes into Key Vault.
module labelingStorage 'modules/labeling-storage.bicep' = {
  name: 'labelingStorage'
  scope: rg
  params: {
    name: 'stlbl${resourceToken}'
    location: location
    tags: tags
    containerName: labelingContainer
    retentionDays: labelingRetentionDays
    selectorPrincipalId: principals.selector
    keyVaultName: keyVault.outputs.name
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

// --- app settings: what each stage reads (shared/settings.py, AL_<FIELD>) ---------------------------
// Identity-based trigger connections sign in as the app's own identity (its client id, like AZURE_CLIENT_ID).
var identityCredential = 'managedidentity'
var exportsBlobUri = externalExports ? exportsRoles.outputs.blobEndpoint : storage.outputs.blobEndpoint
var exportsQueueUri = externalExports ? exportsRoles.outputs.queueEndpoint : storage.outputs.queueEndpoint

var adxSettings = {
  AL_ADX_CLUSTER_URI: adx.outputs.clusterUri
  AL_ADX_INGEST_URI: adx.outputs.ingestUri
  AL_ADX_DATABASE: adx.outputs.databaseName
}

// One value for both apps: the collector lands the random key for the seed the selector asks for
// (a mismatch stays correct, but costs the selector an MD5 per candidate; docs/selection.md).
var selectionSeed = '0'

// --- hostile input (issue 13): an https item_uri must name a blob on these hosts (this account's) ---
var itemHostSettings = {
  AL_ALLOWED_ITEM_HOSTS: replace(replace(storage.outputs.blobEndpoint, 'https://', ''), '/', '')
}

// Every app: the Azure backend (ADX holds predictions, selections, labels and model versions; Blob and
// Queue Storage the rest), so every app gets the ADX coordinates and the loop's blob endpoint.
var commonSettings = union(adxSettings, {
  AL_BACKEND: 'azure'
  AL_MODEL_NAME: modelName
  // Writable scratch space only (the package is read-only on Flex Consumption): no loop state lives on an
  // instance's disk in Azure mode.
  AL_DATA_DIR: '/tmp/activelearning'
  AL_STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
  // One seed for every app: the collector lands the random key the selector ranks by.
  AL_SELECTION_SEED: selectionSeed
})

// The label app sends retrain requests, the dispatch app receives them: the loop account's queue.
var retrainQueueSettings = {
  AL_STORAGE_QUEUE_URL: storage.outputs.queueEndpoint
  AL_RETRAIN_QUEUE: queueNames.retrain
}

// The Azure ML workspace (MLClient: data assets, jobs, models, endpoint); only the dispatch app trains and deploys.
var amlWorkspaceSettings = {
  AL_AML_SUBSCRIPTION_ID: amlSubscriptionId
  AL_AML_RESOURCE_GROUP: amlResourceGroup
  AL_AML_WORKSPACE: amlWorkspace
}

// Only when classes are given: an empty AL_CLASS_NAMES would be a class list with no class; left out, the
// stages use the serving model version's classes.
var classSettings = !empty(classNames) ? { AL_CLASS_NAMES: classNames } : {}

var collectorSettings = union(itemHostSettings, {
  AL_ADX_STREAMING: string(adxStreaming)
  AL_LANDING_CONTAINER: containerNames.landing
  AL_ITEMS_CONTAINER: containerNames.items
  AL_MAX_RECORDS: '1000'
  AL_MAX_BODY_BYTES: '4194304'
  AL_MAX_ITEM_BYTES: '2097152'
  AL_MAX_FUTURE_SECONDS: '300'
  AL_REINGEST_SCHEDULE: '0 */5 * * * *'
  AL_REINGEST_MIN_AGE_SECONDS: '120'
  AL_MIN_SCORED_AT: '2000-01-01T00:00:00Z'
  AL_MAX_EMBEDDING_DIM: '4096'
})

// Label Studio, for the two apps that talk to it: the selector hands tasks over, the label app takes the
// answers back. The token is a Key Vault reference (the same secret is Label Studio's LABEL_STUDIO_USER_TOKEN);
// the project id is empty until the postdeploy hook has run `al labeling setup`. Both build the tasks' image
// references (azure-blob://<container>/<key>) against the labeling account, hence its endpoint; only the
// selector writes there (its role: labeling-storage.bicep).
var labelStudioSettings = {
  AL_LABEL_STUDIO_URL: labelStudio.outputs.url
  AL_LABEL_STUDIO_TOKEN: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.labelStudioTokenSecretUri})'
  AL_LABEL_STUDIO_PROJECT_ID: labelStudioProjectId
  AL_LABEL_STUDIO_TIMEOUT_SECONDS: labelStudioTimeoutSeconds
  AL_LABELING_ACCOUNT_URL: labelingStorage.outputs.blobEndpoint
}

var selectorSettings = union(itemHostSettings, labelStudioSettings, {
  AL_STRATEGY: strategy
  AL_BATCH_SIZE: string(batchSize)
  AL_WINDOW_HOURS: windowHours
  AL_SELECTION_SCHEDULE: selectionSchedule
  AL_SELECTION_LOCK_CONTAINER: containerNames.selectionLock
  AL_SELECTION_LEASE_SECONDS: '60'
  // Where the selector copies the items it hands to Label Studio, on the labeling account.
  AL_LABELING_CONTAINER: labelingContainer
}, labelsPerDay > 0 ? { AL_LABELS_PER_DAY: string(labelsPerDay) } : {},
  labelsTotal > 0 ? { AL_LABELS_TOTAL: string(labelsTotal) } : {},
  !empty(stopUncertaintyBelow) ? { AL_STOP_UNCERTAINTY_BELOW: stopUncertaintyBelow } : {})

var labelsSettings = union(itemHostSettings, retrainQueueSettings, classSettings, labelStudioSettings, {
  // An export names its items by the selector's labeling copies (<labeling container>/<batch>/<item>) or by their
  // https URIs on these hosts: the label stage maps either back to the item (shared/services/labels.py).
  AL_LABELING_CONTAINER: labelingContainer
  // The blob trigger's connection (identity-based): the account the exports land in, which the Event Grid
  // system topic watches (AL_EXPORTS_STORAGE, the connection functions/label_export_trigger names).
  AL_EXPORTS_STORAGE__blobServiceUri: exportsBlobUri
  AL_EXPORTS_STORAGE__queueServiceUri: exportsQueueUri
  AL_EXPORTS_STORAGE__credential: identityCredential
  AL_EXPORTS_STORAGE__clientId: clientIds.labels
  // Flex Consumption runs the Blob trigger only with the Event Grid source (`func start` with Azurite polls:
  // LogsAndContainerScan in local.settings.json.example).
  AL_BLOB_TRIGGER_SOURCE: 'EventGrid'
  // Reports, quarantine and replay use the same (exports) account: its blob endpoint.
  AL_EXPORTS_ACCOUNT_URL: exportsBlobUri
  AL_EXPORTS_CONTAINER: externalExports ? exportsContainer : containerNames.exports
  AL_EXPORTS_PREFIX: exportsPrefix
  AL_QUARANTINE_CONTAINER: containerNames.quarantine
  AL_RETRAIN_STATE_CONTAINER: containerNames.retrainState
  AL_RETRAIN_THRESHOLD: string(retrainThreshold)
  AL_MAX_EXPORT_BYTES: '268435456'
  // The catch-up timer (%AL_LABEL_SYNC_SCHEDULE%): reads the annotations changed since its watermark, for the
  // webhooks Label Studio sent once and lost (POST /api/labels/webhook takes the others).
  AL_LABEL_SYNC_SCHEDULE: labelSyncSchedule
})

var dispatchSettings = union(retrainQueueSettings, amlWorkspaceSettings, classSettings, {
  // The retrain queue trigger's connection (identity-based).
  AL_STORAGE__queueServiceUri: storage.outputs.queueEndpoint
  AL_STORAGE__credential: identityCredential
  AL_STORAGE__clientId: clientIds.dispatch
  AL_GATE_METRIC: gateMetric
  AL_GATE_TOLERANCE: gateTolerance
  AL_GITHUB_REPOSITORY: githubRepository
  AL_GITHUB_WORKFLOW: githubWorkflow
  AL_GITHUB_REF: githubRef
  AL_GITHUB_API_URL: 'https://api.github.com'
  AL_GITHUB_TOKEN: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.githubTokenSecretUri})'
  AL_AML_ENDPOINT: amlEndpoint
  AL_AML_DEPLOYMENT: amlDeployment
  AL_AML_ITEMS_DATASTORE: useAml ? amlItemsDatastore : ''
  AL_TRAINING_TIMEOUT_MINUTES: '360'
  AL_DEPLOY_TIMEOUT_MINUTES: '60'
  AL_POLL_INITIAL_SECONDS: '60'
  AL_POLL_MAX_SECONDS: '900'
  AL_ACTIVITY_RETRY_ATTEMPTS: '3'
  AL_ACTIVITY_RETRY_FIRST_SECONDS: '30'
})

var stageSettings = {
  scoring_collector: collectorSettings
  selector_timer: selectorSettings
  label_export_trigger: labelsSettings
  github_dispatch: dispatchSettings
}

// --- inbound: who may call each app ----------------------------------------------------------------
// The collector: anyone (the Azure ML online endpoint posts scoring results from Microsoft-managed addresses; its
// route takes a function key). The label app: Event Grid (service tag AzureEventGrid: BlobCreated to its blobs
// extension) and Label Studio's outbound addresses (the annotation webhook; should they change, the catch-up
// timer labels_sync still takes every annotation within a minute). The selector and dispatch apps: timer and
// queue triggers only, no caller. And the operator's adminIpRanges for all three.
var adminRanges = empty(adminIpRanges) ? [] : split(replace(adminIpRanges, ' ', ''), ',')
var inbound = {
  collector: { public: true, serviceTags: [], ipRanges: [] }
  selector: { public: false, serviceTags: [], ipRanges: adminRanges }
  labels: { public: false, serviceTags: ['AzureEventGrid'], ipRanges: concat(labelStudio.outputs.outboundIpAddresses, adminRanges) }
  dispatch: { public: false, serviceTags: [], ipRanges: adminRanges }
}

module functionApps 'modules/functionapp.bicep' = [for (app, i) in apps: {
  name: 'app-${app.service}'
  scope: rg
  params: {
    name: 'func-al-${app.service}-${resourceToken}'
    location: location
    tags: tags
    stage: app.stage
    azdServiceName: app.service
    // The app's own identity, everywhere it signs in (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId, ...).
    identityId: appIdentities[i].outputs.resourceId
    identityClientId: appIdentities[i].outputs.clientId
    identityPrincipalId: appIdentities[i].outputs.principalId
    // Its own host storage account: st<service><token> (at most 24 characters).
    hostStorageName: take('st${app.service}${resourceToken}', 24)
    deploymentContainerName: deploymentContainers[i]
    durableTaskHub: app.stage == 'github_dispatch'
    blobTrigger: app.stage == 'label_export_trigger'
    applicationInsightsConnectionString: appInsights.outputs.connectionString
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
    appSettings: union(commonSettings, stageSettings[app.stage], { AL_STAGES: app.stage })
    publicInbound: inbound[app.service].public
    allowedServiceTags: inbound[app.service].serviceTags
    allowedIpRanges: inbound[app.service].ipRanges
  }
  dependsOn: [storageRoles, keyVault, adx]
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
// Each app's identity (client id), as its AZURE_CLIENT_ID app setting has it. (No AZURE_CLIENT_ID output: there is
// no one apps' identity any more, and azd env values are exported into the shell of step 6.)
output COLLECTOR_CLIENT_ID string = clientIds.collector
output SELECTOR_CLIENT_ID string = clientIds.selector
output LABELS_CLIENT_ID string = clientIds.labels
output DISPATCH_CLIENT_ID string = clientIds.dispatch
output AL_STORAGE_ACCOUNT_URL string = storage.outputs.blobEndpoint
output AL_ADX_CLUSTER_URI string = adx.outputs.clusterUri
output AL_ADX_INGEST_URI string = adx.outputs.ingestUri
output AL_ADX_DATABASE string = adx.outputs.databaseName
output AL_STORAGE_QUEUE_URL string = storage.outputs.queueEndpoint
// The workspace coordinates as the code reads them (for `al bootstrap` and other runs outside the apps).
output AL_AML_SUBSCRIPTION_ID string = amlSubscriptionId
output AL_AML_RESOURCE_GROUP string = amlResourceGroup
output AL_AML_WORKSPACE string = amlWorkspace
output AL_AML_ENDPOINT string = amlEndpoint
output AL_AML_DEPLOYMENT string = amlDeployment
// The training workflow's identity: the repository secret AZURE_CLIENT_ID (not one of the apps' identities above).
output GITHUB_AZURE_CLIENT_ID string = useAml && !empty(githubRepository) ? githubIdentity.outputs.clientId : ''
output KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_NAME string = appInsights.outputs.name
output SERVICE_COLLECTOR_NAME string = functionApps[0].outputs.name
output SERVICE_SELECTOR_NAME string = functionApps[1].outputs.name
output SERVICE_LABELS_NAME string = functionApps[2].outputs.name
output SERVICE_DISPATCH_NAME string = functionApps[3].outputs.name
// Read by the postdeploy hook (infra/hooks/postdeploy.sh) to subscribe the label app to the exports account.
output EXPORTS_SYSTEM_TOPIC_NAME string = exportsTopic.outputs.name
output EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP string = exportsResourceGroup
output EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID string = exportsSubscriptionId
output AL_EXPORTS_CONTAINER string = externalExports ? exportsContainer : containerNames.exports
output AL_EXPORTS_PREFIX string = exportsPrefix
output AML_TRAINING_COMPUTE string = useAml ? amlTrainingCompute : ''
output AML_ITEMS_DATASTORE string = useAml ? amlItemsDatastore : ''
output COLLECTOR_URL string = 'https://${functionApps[0].outputs.hostName}/api/predictions'
// Labeling (no secrets: names and addresses only). Where labelers sign in, and what the postdeploy hook passes
// to `al labeling setup`.
output LABEL_STUDIO_URL string = labelStudio.outputs.url
output LABELING_ACCOUNT_URL string = labelingStorage.outputs.blobEndpoint
output LABELING_STORAGE_ACCOUNT_NAME string = labelingStorage.outputs.name
output AL_LABELING_CONTAINER string = labelingContainer
output AL_MODEL_NAME string = modelName
output LABEL_STUDIO_USERNAME string = labelStudioUsername
output LABEL_STUDIO_PROJECT_ID string = labelStudioProjectId
// Key Vault secret names (not values) the hook reads with `az keyvault secret show`.
output LABEL_STUDIO_TOKEN_SECRET_NAME string = keyVault.outputs.labelStudioTokenSecretName
output LABELING_STORAGE_KEY_SECRET_NAME string = labelingStorage.outputs.keySecretName
