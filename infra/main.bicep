// The active-learning loop on Azure: `azd up` provisions this and deploys the one Python package to
// four Flex Consumption function apps, one stage each (AL_STAGES). See docs/deploy.md.
//
// Identity: one user-assigned managed identity for the four apps, with data-plane roles only (storage
// blob/queue/table, ADX Ingestor + Viewer, AzureML Data Scientist, Key Vault Secrets User, Monitoring
// Metrics Publisher). No storage key, connection string with a secret, or token is an app setting:
// the storage account refuses shared keys and the GitHub token is a Key Vault reference.
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
@description('Selection strategy (AL_STRATEGY): calibration_switch (default), gradient_spaced, spaced_margin, distance_margin, pair_capped_margin, badge, k_center, typiclust, cluster_margin, margin, least_confidence, entropy, random.')
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
@description('GitHub token with actions:write; stored in Key Vault. Empty: set the secret github-token by hand.')
param githubToken string = ''

// --- the existing Azure ML workspace ----------------------------------------------------------------
@description('Subscription of the Azure ML workspace; default this subscription.')
param amlSubscriptionId string = subscription().subscriptionId
@description('Resource group of the existing Azure ML workspace; empty with amlWorkspace: no Azure ML wiring.')
param amlResourceGroup string = ''
param amlWorkspace string = ''
@description('Managed online endpoint serving the model, and the deployment the loop updates.')
param amlEndpoint string = ''
param amlDeployment string = ''
@description('Labeling project to export from (AL_AML_LABELING_JOB): its name in Azure ML Data Labeling; empty until the project exists (docs/deploy.md step 5).')
param amlLabelingJob string = ''
@description('NCRONTAB with seconds for the label app\'s automatic export timer (AL_EXPORT_SCHEDULE); every 30 minutes by default.')
param exportSchedule string = '0 */30 * * * *'
@description('Format the automatic export asks Data Labeling for (AL_EXPORT_FORMAT).')
@allowed(['CSV', 'Coco'])
param exportFormat string = 'CSV'
@description('VM size and node limit of the training compute cluster created in the workspace (min nodes 0).')
param amlComputeVmSize string = 'Standard_DS3_v2'
param amlComputeMaxNodes int = 1
@description('Datastore created on the labeling input container: the labeling project\'s data source.')
param amlLabelingDatastore string = 'al_labeling_input'

// One name each, in one place: training/job.yml mounts `azureml://datastores/<amlItemsDatastore>/paths/` and
// runs on `azureml:<amlTrainingCompute>`; tests/integration/test_infra.py holds the two files to each other.
// Not parameters on purpose: a different value here would not change the job spec.
var amlItemsDatastore = 'al_items'
var amlTrainingCompute = 'al-train-cpu'

// --- where Azure ML Data Labeling writes its exports ------------------------------------------------
@description('Storage account the labeling exports land in (the workspace\'s default blob store); empty: the loop\'s account.')
param exportsStorageAccountName string = ''
param exportsStorageResourceGroup string = ''
@description('Subscription of that account; empty: the Azure ML workspace\'s.')
param exportsStorageSubscriptionId string = ''
@description('An Event Grid system topic that already exists on the exports account (an account has at most one); empty: create one.')
param exportsSystemTopicName string = ''
@description('Container and folder the label stage\'s blob trigger watches (AL_EXPORTS_CONTAINER, AL_EXPORTS_PREFIX).')
param exportsContainer string = 'exports'
param exportsPrefix string = ''

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
  labeling: 'labeling-input' // shared/services/select.py LABELING_CONTAINER, AL_LABELING_CONTAINER
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
}

// The four apps: azd service name, stage, and the Flex Consumption package container of each.
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

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-al-${resourceToken}'
    location: location
    tags: tags
  }
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

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: 'log-al-${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
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
    appPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stal${resourceToken}'
    location: location
    tags: tags
    containers: concat(map(items(containerNames), c => c.value), deploymentContainers)
    queues: map(items(queueNames), q => q.value)
  }
}

module aml 'modules/aml-access.bicep' = if (useAml) {
  name: 'amlAccess'
  scope: resourceGroup(amlSubscriptionId, useAml ? amlResourceGroup : rg.name)
  params: {
    workspaceName: amlWorkspace
    appPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    itemsContainer: containerNames.items
    labelingContainer: containerNames.labeling
    itemsDatastoreName: amlItemsDatastore
    labelingDatastoreName: amlLabelingDatastore
    computeName: amlTrainingCompute
    computeVmSize: amlComputeVmSize
    computeMaxNodes: amlComputeMaxNodes
    computeIdentityId: useAml ? computeIdentity.outputs.resourceId : ''
    workflowPrincipalId: useAml && !empty(githubRepository) ? githubIdentity.outputs.principalId : ''
  }
}

module storageRoles 'modules/storage-roles.bicep' = {
  name: 'storageRoles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appPrincipalId: identity.outputs.principalId
    workspacePrincipalId: useAml ? aml.outputs.workspacePrincipalId : ''
    computePrincipalId: useAml ? computeIdentity.outputs.principalId : ''
  }
}

// Exports in another account (the workspace's default blob store): the label app's roles there, and the
// quarantine container next to the exports (reports, quarantine and replay stay in the watched account).
module exportsRoles 'modules/exports-roles.bicep' = if (externalExports) {
  name: 'exportsRoles'
  scope: resourceGroup(exportsSubscriptionId, exportsResourceGroup)
  params: {
    storageAccountName: exportsStorageAccountName
    appPrincipalId: identity.outputs.principalId
    quarantineContainer: containerNames.quarantine
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
    appClientId: identity.outputs.clientId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: 'kv-al-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    githubToken: githubToken
  }
}

// --- app settings: what each stage reads (shared/settings.py, AL_<FIELD>) ---------------------------
var identityConnection = {
  credential: 'managedidentity'
  clientId: identity.outputs.clientId
}
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

// The Azure ML workspace (MLClient / ARM calls: labeling export, jobs, models, endpoint).
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

var selectorSettings = union(amlWorkspaceSettings, itemHostSettings, {
  AL_STRATEGY: strategy
  AL_BATCH_SIZE: string(batchSize)
  AL_WINDOW_HOURS: windowHours
  AL_SELECTION_SCHEDULE: selectionSchedule
  AL_SELECTION_LOCK_CONTAINER: containerNames.selectionLock
  AL_SELECTION_LEASE_SECONDS: '60'
  AL_LABELING_CONTAINER: containerNames.labeling
  // The Data Labeling project the selector hands off to (and may ask to export after a hand-off).
  AL_AML_LABELING_JOB: amlLabelingJob
}, labelsPerDay > 0 ? { AL_LABELS_PER_DAY: string(labelsPerDay) } : {},
  labelsTotal > 0 ? { AL_LABELS_TOTAL: string(labelsTotal) } : {},
  !empty(stopUncertaintyBelow) ? { AL_STOP_UNCERTAINTY_BELOW: stopUncertaintyBelow } : {})

var labelsSettings = union(retrainQueueSettings, amlWorkspaceSettings, classSettings, {
  // The blob trigger's connection (identity-based): the account the exports land in, which the Event Grid
  // system topic watches (AL_EXPORTS_STORAGE, the connection functions/label_export_trigger names).
  AL_EXPORTS_STORAGE__blobServiceUri: exportsBlobUri
  AL_EXPORTS_STORAGE__queueServiceUri: exportsQueueUri
  AL_EXPORTS_STORAGE__credential: identityConnection.credential
  AL_EXPORTS_STORAGE__clientId: identityConnection.clientId
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
  // Automatic export: a timer asks Data Labeling to export this project's labels (exportLabels) into the
  // workspace's default blob store, where the trigger above picks them up.
  AL_AML_LABELING_JOB: amlLabelingJob
  AL_EXPORT_SCHEDULE: exportSchedule
  AL_EXPORT_FORMAT: exportFormat
  // exportLabels is an ARM operation: this cloud's Resource Manager endpoint.
  AL_AML_ARM_URL: environment().resourceManager
})

var dispatchSettings = union(retrainQueueSettings, amlWorkspaceSettings, classSettings, {
  // The retrain queue trigger's connection (identity-based).
  AL_STORAGE__queueServiceUri: storage.outputs.queueEndpoint
  AL_STORAGE__credential: identityConnection.credential
  AL_STORAGE__clientId: identityConnection.clientId
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

module functionApps 'modules/functionapp.bicep' = [for (app, i) in apps: {
  name: 'app-${app.service}'
  scope: rg
  params: {
    name: 'func-al-${app.service}-${resourceToken}'
    location: location
    tags: tags
    stage: app.stage
    azdServiceName: app.service
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainers[i]
    applicationInsightsConnectionString: appInsights.outputs.connectionString
    appSettings: union(commonSettings, stageSettings[app.stage], { AL_STAGES: app.stage })
  }
  dependsOn: [storageRoles, keyVault, adx]
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CLIENT_ID string = identity.outputs.clientId
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
// The training workflow's identity: the repository secret AZURE_CLIENT_ID (not the apps' AZURE_CLIENT_ID above).
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
output AL_AML_LABELING_JOB string = amlLabelingJob
output AML_TRAINING_COMPUTE string = useAml ? amlTrainingCompute : ''
output AML_ITEMS_DATASTORE string = useAml ? amlItemsDatastore : ''
output COLLECTOR_URL string = 'https://${functionApps[0].outputs.hostName}/api/predictions'
